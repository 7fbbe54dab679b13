"""How the Transit batcher coalesces signing inputs into Vault requests (service/transit.py), with a
stand-in for the request so that only the batching rules are under test: Vault itself is real in
tests/integration/test_transit*.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

import hvac
import pytest

from service.errors import SignerUnavailableError
from service.transit import _Batcher

T = TypeVar("T")


class RecordingVault:
    """Answers each batch after `round_trip` seconds with its items, and records the batch sizes."""

    def __init__(self, round_trip: float = 0.002) -> None:
        self.round_trip = round_trip
        self.batches: list[list[int]] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def send(self, _caller: object, items: list[int]) -> list[int | SignerUnavailableError]:
        self.batches.append(items)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.round_trip)
        finally:
            self.in_flight -= 1
        return list(items)


class NoVault:
    """The Vault caller the batcher hands to `RecordingVault.send`, which never calls it."""

    def call(self, operation: Callable[[hvac.Client], T]) -> T:
        raise AssertionError("the batching rules are tested without Vault")


def batcher(vault: RecordingVault, *, max_batch: int = 128, max_wait: float = 0.01, per_caller: int = 4):
    return _Batcher([NoVault()], vault.send, max_batch=max_batch, max_wait=max_wait, per_caller=per_caller)


async def closed(coalescer: _Batcher) -> None:
    await coalescer.close(lambda: SignerUnavailableError("closed"))


async def test_a_lone_input_goes_at_once_not_after_the_longest_wait():
    vault = RecordingVault()
    coalescer = batcher(vault, max_wait=0.05)
    started = time.perf_counter()
    (future,) = coalescer.submit([7])
    assert await future == 7
    assert time.perf_counter() - started < 0.03  # the gap and a round trip, far below max_wait
    assert vault.batches == [[7]]
    await closed(coalescer)


async def test_a_burst_is_one_request_and_each_caller_gets_its_own_answer():
    vault = RecordingVault()
    coalescer = batcher(vault)
    futures = [future for item in range(40) for future in coalescer.submit([item])]
    assert await asyncio.gather(*futures) == list(range(40))
    assert vault.batches == [list(range(40))]
    await closed(coalescer)


async def test_a_busy_loop_fills_batches_although_arrivals_are_more_than_a_millisecond_apart():
    vault = RecordingVault()
    coalescer = batcher(vault, max_wait=0.02)
    futures = []
    # An arrival every 1.5 ms, with the loop never idle in between: each iteration runs 0.4 ms
    # of other calls' work, as under load.
    for item in range(60):
        busy_until = time.perf_counter() + 0.0015
        while time.perf_counter() < busy_until:
            time.sleep(0.0004)
            await asyncio.sleep(0)
        futures.extend(coalescer.submit([item]))
    assert await asyncio.gather(*futures) == list(range(60))
    assert len(vault.batches) <= 12, [len(batch) for batch in vault.batches]
    await closed(coalescer)


async def answered(coalescer: _Batcher, items: list[int], *, one_by_one: bool = False) -> None:
    """Submit `items`, a call each, in one turn of the loop (or one_by_one, the loop turning between
    them), and await their answers."""
    futures = []
    for item in items:
        futures.extend(coalescer.submit([item]))
        if one_by_one:
            await asyncio.sleep(0)
    assert await asyncio.gather(*futures) == items


async def test_once_the_callers_of_the_last_batch_are_back_the_next_goes_without_waiting_the_gap():
    vault = RecordingVault(round_trip=0.001)
    # max_wait far off: what sends the batch within a few turns of the loop is the callers' count, as
    # the gap (a millisecond after the last arrival, with an idle loop) takes longer.
    coalescer = batcher(vault, max_wait=0.5)
    await answered(coalescer, list(range(8)))
    futures = [future for item in range(8, 16) for future in coalescer.submit([item])]
    for _ in range(3):  # the worker wakes, looks at the queue, and sends
        await asyncio.sleep(0)
    assert [len(batch) for batch in vault.batches] == [8, 8]
    assert await asyncio.gather(*futures) == list(range(8, 16))
    await closed(coalescer)


async def test_a_batch_cut_short_once_does_not_shrink_the_next():
    vault = RecordingVault(round_trip=0.001)
    coalescer = batcher(vault, max_wait=0.05)
    await answered(coalescer, list(range(8)))
    await answered(coalescer, list(range(8, 13)))  # three callers late: five go after the gap
    # All eight back, one at a time: one batch, not five (the size of the last) and three.
    await answered(coalescer, list(range(13, 21)), one_by_one=True)
    assert [len(batch) for batch in vault.batches] == [8, 5, 8]
    await closed(coalescer)


async def test_full_batches_go_side_by_side_and_partial_ones_one_at_a_time():
    vault = RecordingVault(round_trip=0.02)
    coalescer = batcher(vault, max_batch=10)
    futures = coalescer.submit(list(range(45)))
    assert await asyncio.gather(*futures) == list(range(45))
    assert sorted(len(batch) for batch in vault.batches) == [5, 10, 10, 10, 10]
    assert vault.most_in_flight == 4
    await closed(coalescer)


async def test_withdrawn_inputs_are_left_out_and_no_request_is_empty():
    vault = RecordingVault(round_trip=0.02)
    coalescer = batcher(vault)
    (first,) = coalescer.submit([1])
    await asyncio.sleep(0.005)  # the first is in flight; the next ones queue behind it
    withdrawn = coalescer.submit([2, 3])
    for future in withdrawn:
        future.cancel()
    assert await first == 1
    (last,) = coalescer.submit([4])
    assert await last == 4
    assert vault.batches == [[1], [4]]
    await closed(coalescer)


async def test_closing_fails_what_is_queued_with_the_signer_error():
    vault = RecordingVault(round_trip=1.0)
    coalescer = batcher(vault)
    futures = coalescer.submit([1, 2])
    await asyncio.sleep(0.01)
    await closed(coalescer)
    for future in futures:
        with pytest.raises(SignerUnavailableError, match="closed"):
            await future
