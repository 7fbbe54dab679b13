"""service.grpc_types.invocation_metadata: one reading of a call's metadata serves the call's task."""

from __future__ import annotations

import asyncio

from service.grpc_types import invocation_metadata


class CountingContext:
    """The one method of a servicer context that invocation_metadata uses, counting its calls."""

    def __init__(self, metadata: tuple[tuple[str, str], ...] | None) -> None:
        self.metadata = metadata
        self.reads = 0

    def invocation_metadata(self) -> tuple[tuple[str, str], ...] | None:
        self.reads += 1
        return self.metadata


async def test_a_call_reads_its_metadata_from_grpc_once():
    context = CountingContext((("x-request-id", "req-1"), ("authorization", "Bearer k")))

    first = invocation_metadata(context)
    again = invocation_metadata(context)

    assert list(first) == [("x-request-id", "req-1"), ("authorization", "Bearer k")]
    assert again is first
    assert context.reads == 1


async def test_another_context_in_the_same_task_gets_its_own_metadata():
    one, other = CountingContext((("x-request-id", "one"),)), CountingContext(None)

    assert list(invocation_metadata(one)) == [("x-request-id", "one")]
    assert list(invocation_metadata(other)) == []
    assert list(invocation_metadata(one)) == [("x-request-id", "one")]
    assert (one.reads, other.reads) == (2, 1)


async def test_concurrent_calls_each_see_their_own_metadata():
    # Each call's task keeps its own reading: a cache shared by the tasks would have the others' readings
    # evict it, and read grpc again.
    async def call(request_id: str) -> tuple[list[tuple[str, str | bytes]], int]:
        context = CountingContext((("x-request-id", request_id),))
        invocation_metadata(context)
        await asyncio.sleep(0)  # the other calls read theirs meanwhile
        return list(invocation_metadata(context)), context.reads

    seen = await asyncio.gather(*(call(f"req-{n}") for n in range(5)))

    assert seen == [([("x-request-id", f"req-{n}")], 1) for n in range(5)]
