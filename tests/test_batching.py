"""The hot path's batching: calls made in one loop turn (and by callers they wake) leave as one batch, calls
made while a batch is in flight leave together as soon as it is back, and each caller gets its own answer or
the batch's error."""

from __future__ import annotations

import asyncio

import pytest

from shoal.batching import Coalescer


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def send(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        await self.gate.wait()
        if -1 in items:
            raise ValueError("refused")
        return [i * 10 for i in items]


async def test_calls_of_one_loop_turn_leave_as_one_batch_and_each_gets_its_answer() -> None:
    store = Recorder()
    call = Coalescer(store.send)
    assert await asyncio.gather(*(call(i) for i in range(5))) == [0, 10, 20, 30, 40]
    assert store.batches == [[0, 1, 2, 3, 4]]


async def test_calls_made_while_a_batch_is_in_flight_leave_together_once_it_is_back() -> None:
    store = Recorder()
    store.gate.clear()
    call = Coalescer(store.send)
    first = asyncio.ensure_future(call(1))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    later = [asyncio.ensure_future(call(i)) for i in (2, 3)]
    await asyncio.sleep(0)
    assert store.batches == [[1]]
    store.gate.set()
    assert await first == 10 and await asyncio.gather(*later) == [20, 30]
    assert store.batches == [[1], [2, 3]]


async def test_batches_are_cut_at_the_most_given() -> None:
    store = Recorder()
    call = Coalescer(store.send, most=2)
    await asyncio.gather(*(call(i) for i in range(5)))
    assert store.batches == [[0, 1], [2, 3], [4]]


async def test_a_refused_batch_is_each_callers_error_and_the_next_batch_still_goes() -> None:
    store = Recorder()
    call = Coalescer(store.send)
    outcomes = await asyncio.gather(call(-1), call(2), return_exceptions=True)
    assert [type(o) for o in outcomes] == [ValueError, ValueError]
    assert await call(3) == 30


async def test_a_cancelled_caller_leaves_the_others_their_answers() -> None:
    store = Recorder()
    store.gate.clear()
    call = Coalescer(store.send)
    gone, kept = asyncio.ensure_future(call(1)), asyncio.ensure_future(call(2))
    await asyncio.sleep(0)
    gone.cancel()
    store.gate.set()
    assert await kept == 20
    with pytest.raises(asyncio.CancelledError):
        await gone


async def test_a_caller_woken_as_an_item_is_queued_has_its_item_in_the_same_batch() -> None:
    store = Recorder()
    call = Coalescer(store.send)
    freed = asyncio.Event()  # as a slot given back once a report is queued: the next task's start follows

    async def next_in_slot() -> int:
        await freed.wait()
        return await call(2)

    waiter = asyncio.ensure_future(next_in_slot())
    await asyncio.sleep(0)
    first = call.put(1)
    freed.set()
    assert await first == 10 and await waiter == 20
    assert store.batches == [[1, 2]]
