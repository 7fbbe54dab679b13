"""The TokenService RPCs, and their registration on a gRPC server.

Handlers raise TokenServiceError; `rpc_handlers` turns those into statuses
with an ErrorInfo detail, turns undecodable request bytes into
INVALID_ARGUMENT (grpc.aio would report them as UNKNOWN), and turns any
other exception into INTERNAL without leaking its text.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import message as protobuf_message
from google.protobuf.timestamp_pb2 import Timestamp
from tokenservice.v1 import token_service_pb2 as pb

from service.errors import (
    BatchTooLargeError,
    RequestMalformedError,
    TokenMissingError,
    TokenServiceError,
    TokenTooLargeError,
    abort_with_error,
    to_rpc_status,
)
from service.metrics import UNKNOWN_ORG_LABEL, Metrics
from service.minting import TOKEN_MAX_BYTES, Identity, MintedToken, TokenMinter, TokenVerifier, check_identity
from service.secrets import SecretStore

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["TokenService"].full_name

_IDENTITY_TO_PROTO = {Identity.EMAIL: pb.IDENTITY_EMAIL, Identity.EXTERNAL_ID: pb.IDENTITY_EXTERNAL_ID}


def _timestamp(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


class TokenServicer:
    """Mints and verifies tokens with the store's current secrets."""

    def __init__(
        self,
        store: SecretStore,
        minter: TokenMinter,
        verifier: TokenVerifier,
        metrics: Metrics,
        *,
        default_org: str,
        batch_limit: int = 1000,
    ) -> None:
        self._store = store
        self._minter = minter
        self._verifier = verifier
        self._metrics = metrics
        self._default_org = default_org
        self._batch_limit = batch_limit

    async def MintToken(self, request: pb.MintTokenRequest, context: grpc.aio.ServicerContext) -> pb.MintTokenResponse:
        return self._mint(request)

    async def MintTokens(
        self, request: pb.MintTokensRequest, context: grpc.aio.ServicerContext
    ) -> pb.MintTokensResponse:
        if len(request.requests) > self._batch_limit:
            raise BatchTooLargeError(
                f"requests: {len(request.requests)} entries exceed the batch limit of {self._batch_limit}; "
                "split the batch", field="requests")
        return pb.MintTokensResponse(results=[self._mint_result(entry) for entry in request.requests])

    async def VerifyToken(
        self, request: pb.VerifyTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.VerifyTokenResponse:
        if not request.token:
            raise TokenMissingError("token: required; pass the token to check", field="token")
        if len(request.token) > TOKEN_MAX_BYTES:
            raise TokenTooLargeError(
                f"token: longer than {TOKEN_MAX_BYTES} bytes, which no token of this service is", field="token")
        secret = self._store.current(request.org or self._default_org)
        outcome = self._verifier.verify(request.token, secret.key)
        response = pb.VerifyTokenResponse(
            valid=outcome.valid, reason=outcome.reason, detail=outcome.detail,
            external_id=outcome.external_id, email=outcome.email)
        if outcome.issued_at is not None:
            response.issued_at.CopyFrom(_timestamp(outcome.issued_at))
            response.valid_until.CopyFrom(_timestamp(outcome.valid_until))
        if outcome.identity_used is not None:
            response.identity_used = _IDENTITY_TO_PROTO[outcome.identity_used]
        return response

    def _mint_result(self, request: pb.MintTokenRequest) -> pb.MintTokenResult:
        try:
            return pb.MintTokenResult(token=self._mint(request))
        except TokenServiceError as error:
            return pb.MintTokenResult(error=to_rpc_status(error))

    def _mint(self, request: pb.MintTokenRequest) -> pb.MintTokenResponse:
        org = request.org or self._default_org
        started = time.perf_counter()
        try:
            identity = check_identity(request.external_id, request.email)
            secret = self._store.current(org)
            minted = self._minter.mint(secret, external_id=request.external_id, email=request.email)
        except TokenServiceError as error:
            org_label = org if self._store.knows(org) else UNKNOWN_ORG_LABEL
            self._metrics.mint_errors_total.labels(org=org_label, reason=error.reason).inc()
            raise
        self._metrics.mint_duration.observe(time.perf_counter() - started)
        self._metrics.tokens_issued_total.labels(org=org, identity=identity.value).inc()
        return _mint_response(minted)


def _mint_response(minted: MintedToken) -> pb.MintTokenResponse:
    return pb.MintTokenResponse(
        token=minted.token,
        issued_at=_timestamp(minted.issued_at),
        valid_until=_timestamp(minted.valid_until),
        secret_version=minted.secret_version,
        identity_used=_IDENTITY_TO_PROTO[minted.identity_used],
    )


class _Undecodable:
    """Stands for request bytes that did not parse, so the handler can refuse them."""


def _tolerant(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except protobuf_message.DecodeError:
            return _Undecodable()

    return deserialize


def _guarded(method: Callable[..., Awaitable[Any]], request_name: str) -> Callable[..., Awaitable[Any]]:
    async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            if isinstance(request, _Undecodable):
                raise RequestMalformedError(
                    f"request: the bytes do not parse as a {request_name}; regenerate your stubs from "
                    "protos/tokenservice/v1/token_service.proto")
            return await method(request, context)
        except TokenServiceError as error:
            await abort_with_error(context, error)
        except Exception:
            logger.exception("unexpected error in %s", request_name)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; the service logged it")

    return handle


def rpc_handlers(servicer: TokenServicer) -> grpc.GenericRpcHandler:
    """The TokenService method handlers for `servicer`."""
    methods = {
        "MintToken": (pb.MintTokenRequest, servicer.MintToken),
        "MintTokens": (pb.MintTokensRequest, servicer.MintTokens),
        "VerifyToken": (pb.VerifyTokenRequest, servicer.VerifyToken),
    }
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            _guarded(method, request_type.DESCRIPTOR.name),
            request_deserializer=_tolerant(request_type.FromString),
            response_serializer=lambda response: response.SerializeToString(),
        )
        for name, (request_type, method) in methods.items()
    }
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)
