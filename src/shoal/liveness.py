"""The one rule for "is this node alive, and a member?", over one node record.

A node record holds what the node says of itself (its last beat by the store's clock, whether it is
leaving, its incarnation) and what the master decided about it (a verdict, and the incarnation that
verdict is about). A verdict about an earlier incarnation says nothing about this one: the node restarted,
or came back after it was declared dead, and waits to be verified again.

Every part of shoal that asks about a node (scheduling, the cache ring, elections, the detector's helpers,
operator actions, what ``GET /api/v1/cluster`` shows) asks ``liveness(record, now, within)`` and reads one
property of the answer, so that no two places can disagree on what "alive" means. ``within`` is the
silence the caller tolerates: ``dead_after`` beats for membership, fewer where a caller must not wait on
a node that merely might be alive (standing for master).

Pure: no I/O, no clock of its own (``now`` is the store's clock, as the beats are).
"""

from __future__ import annotations

from dataclasses import dataclass

from shoal.models import ALIVE, DEAD, REJECTED, SUSPECT, NodeRecord

__all__ = ["Liveness", "liveness", "verdict"]


def verdict(record: NodeRecord) -> str:
    """The master's verdict on the node's current incarnation; "" while it has none (new, or rejoined)."""
    if record.state in (ALIVE, SUSPECT, DEAD, REJECTED) and record.state_incarnation == record.incarnation:
        return record.state
    return ""


@dataclass(frozen=True, slots=True)
class Liveness:
    """What the cluster may assume of one node at one moment."""

    #: What users see: the verdict on this incarnation, else ``alive`` or ``suspect`` by its beats alone.
    state: str
    #: The master's verdict on this incarnation ("" while there is none).
    verdict: str
    #: It beat within the caller's window, by the store's clock.
    beating: bool
    #: It is leaving: it takes no new work and stands for nothing.
    draining: bool

    @property
    def verified(self) -> bool:
        """The master admitted this incarnation and has not since declared it dead or rejected it."""
        return self.verdict in (ALIVE, SUSPECT)

    @property
    def refused(self) -> bool:
        """The master declared this incarnation dead, or rejected it."""
        return self.verdict in (DEAD, REJECTED)

    @property
    def present(self) -> bool:
        """Beating and not refused: it counts as there (its task types, a new token), verified or not yet."""
        return self.beating and not self.refused

    @property
    def member(self) -> bool:
        """Verified, beating and staying: it holds cache keys and may probe others for the master."""
        return self.verified and self.beating and not self.draining

    @property
    def healthy(self) -> bool:
        """A member the master last saw alive: it may be given new work (a suspect gets none)."""
        return self.member and self.verdict == ALIVE

    @property
    def may_stand(self) -> bool:
        """May stand for master or be handed the role: present and staying. No verdict is needed, since
        only a master gives verdicts and a cluster without one must still elect one."""
        return self.present and not self.draining


def liveness(record: NodeRecord, now: float, within: float) -> Liveness:
    """The one answer for ``record`` at store time ``now``, tolerating ``within`` seconds of silence."""
    beating = now - record.last_beat <= within
    said = verdict(record)
    return Liveness(
        state=said or (ALIVE if beating else SUSPECT),
        verdict=said,
        beating=beating,
        draining=record.draining,
    )
