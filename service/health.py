"""grpc.health.v1 for the service names this server reports on, and no others.

grpc_health's servicer answers Watch for any name with SERVICE_UNKNOWN and
keeps the stream, holding the name (up to the message limit) for as long as
the peer likes; 2,000 such streams with 100 KB names grew the process by
about 1 GiB. This server's names are fixed, so an unknown one is refused at
once by Check and Watch alike, with NOT_FOUND as the health protocol has it
(a grpc.health.v1 status, so without a tokenservice.v1 ErrorInfo reason).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from service.grpc_types import ServicerContext


class ServedHealth(health_pb2_grpc.HealthServicer):
    """grpc_health's aio servicer, limited to `services`."""

    def __init__(self, services: Iterable[str]) -> None:
        self._services = frozenset(services)
        self._statuses = health.aio.HealthServicer()
        self._closing = asyncio.Event()
        self._unknown = (
            "service: not one this server reports on (the name is not repeated here); ask for one "
            "of " + ", ".join(repr(name) for name in sorted(self._services))
        )

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        await self._refuse_unknown(request, context)
        return await self._statuses.Check(request, context)

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: ServicerContext) -> None:
        await self._refuse_unknown(request, context)
        watching = asyncio.ensure_future(self._statuses.Watch(request, context))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait((watching, closing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            watching.cancel()
            closing.cancel()
        if watching.done() and not watching.cancelled():
            watching.result()

    async def set(self, service: str, status: int) -> None:
        """Set the status of one of the served names."""
        if service not in self._services:
            raise ValueError(f"health service {service!r} is not one of the names given to ServedHealth")
        await self._statuses.set(service, status)

    async def enter_graceful_shutdown(self) -> None:
        """Turn every name NOT_SERVING for good."""
        await self._statuses.enter_graceful_shutdown()

    def end_watches(self) -> None:
        """End every Watch stream (they have seen NOT_SERVING), so that stopping the server need not wait
        its grace period for streams that never end by themselves."""
        self._closing.set()

    async def _refuse_unknown(self, request: health_pb2.HealthCheckRequest, context: ServicerContext) -> None:
        if request.service not in self._services:
            await context.abort(grpc.StatusCode.NOT_FOUND, self._unknown)
