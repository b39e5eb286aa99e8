"""A key's owner forgets the fill leases of fillers that never answer (they died filling), even when no one
asks for those keys again: the leases it holds stay bounded by the fills in flight."""

from __future__ import annotations

from shoal.cache.owner import ShardOwner
from shoal.cache.shard import Shard

HOLD_S = 30.0


class Timer:
    """Monotonic seconds that the test moves on."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_leases_of_fillers_that_never_answered_are_dropped_once_they_lapse() -> None:
    timer = Timer()
    owner = ShardOwner(Shard(1 << 20, 1024), hold_s=HOLD_S, timer=timer)
    for i in range(1000):  # each granted to a filler that dies before it stores or releases anything
        assert (await owner.lease(f"abandoned-{i}", wait_s=1)).lease
    timer.now += HOLD_S / 2
    young = await owner.lease("young", wait_s=1)
    assert young.lease and owner.leases() == 1001  # none has lapsed yet
    timer.now += HOLD_S / 2
    assert owner.leases() == 1 and owner.lapsed == 1000
    # The lease still within its time holds until its holder stores.
    owner.store("young", b"filled", ttl_s=60, keep_s=0)
    assert owner.leases() == 0
    # A key whose lease lapsed is granted afresh.
    assert (await owner.lease("abandoned-0", wait_s=1)).lease and owner.leases() == 1
