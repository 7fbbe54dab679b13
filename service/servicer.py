"""The TokenService RPCs, and their registration on a gRPC server.

Handlers raise TokenServiceError; `rpc_handlers` turns those into statuses
with an ErrorInfo detail, turns undecodable request bytes into
INVALID_ARGUMENT (grpc.aio would report them as UNKNOWN), and turns any
other exception into INTERNAL without leaking its text.
"""

from __future__ import annotations

import logging
import itertools
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from google.protobuf import message as protobuf_message
from google.protobuf.timestamp_pb2 import Timestamp
from tokenservice.v1 import token_service_pb2 as pb

from service.audit import AuditedCall, AuditLog, MintAttempt
from service.callers import Caller, CallerAuthenticator
from service.errors import (
    BatchTooLargeError,
    PeerRateLimitedError,
    RequestMalformedError,
    TokenMissingError,
    TokenServiceError,
    TokenTooLargeError,
    abort_with_error,
    status_code_for,
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


_REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# Request ids made here: a random per-process prefix and a counter (uuid4 cost a syscall per call).
_REQUEST_ID_PREFIX = secrets.token_hex(8)
_request_numbers = itertools.count()


def _audited_call(context: grpc.aio.ServicerContext, rpc: str) -> AuditedCall:
    request_id = next((value for name, value in context.invocation_metadata() or () if name == "x-request-id"), "")
    if not isinstance(request_id, str) or not _REQUEST_ID_PATTERN.match(request_id):
        request_id = f"{_REQUEST_ID_PREFIX}{next(_request_numbers):016x}"
    return AuditedCall(rpc, request_id, context.peer() or "")


class TokenServicer:
    """Mints and verifies tokens with the store's current secrets, for the callers
    the authenticator recognises, within their policies; every mint attempt is audited."""

    def __init__(
        self,
        store: SecretStore,
        minter: TokenMinter,
        verifier: TokenVerifier,
        metrics: Metrics,
        authenticator: CallerAuthenticator,
        audit: AuditLog,
        *,
        default_org: str,
        batch_limit: int = 1000,
    ) -> None:
        self._store = store
        self._minter = minter
        self._verifier = verifier
        self._metrics = metrics
        self._authenticator = authenticator
        self._audit = audit
        self._default_org = default_org
        self._batch_limit = batch_limit
        self._issued_counters: dict[tuple[str, str, str], Any] = {}

    async def MintToken(self, request: pb.MintTokenRequest, context: grpc.aio.ServicerContext) -> pb.MintTokenResponse:
        call = _audited_call(context, "MintToken")
        try:
            caller = self._admit_mint(context, call, [request])
            response = self._mint(request, caller, call)
        except Exception:
            await self._audit.write(call, serves_tokens=False)
            raise
        # No token leaves without its audit record: this raises AUDIT_UNAVAILABLE when it is not written.
        await self._audit.write(call, serves_tokens=True)
        return response

    async def MintTokens(
        self, request: pb.MintTokensRequest, context: grpc.aio.ServicerContext
    ) -> pb.MintTokensResponse:
        call = _audited_call(context, "MintTokens")
        try:
            caller = self._admit_mint(context, call, request.requests)
            results = [self._mint_result(entry, caller, call) for entry in request.requests]
        except Exception:
            await self._audit.write(call, serves_tokens=False)
            raise
        await self._audit.write(call, serves_tokens=any(attempt.status == "OK" for attempt in call.attempts))
        return pb.MintTokensResponse(results=results)

    async def VerifyToken(
        self, request: pb.VerifyTokenRequest, context: grpc.aio.ServicerContext
    ) -> pb.VerifyTokenResponse:
        org = request.org or self._default_org
        self._admit(context, "VerifyToken", cost=1).check_org(org)
        if not request.token:
            raise TokenMissingError("token: required; pass the token to check", field="token")
        if len(request.token) > TOKEN_MAX_BYTES:
            raise TokenTooLargeError(
                f"token: longer than {TOKEN_MAX_BYTES} bytes, which no token of this service is", field="token")
        secret = self._store.current(org)
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

    def _admit(self, context: grpc.aio.ServicerContext, rpc: str, cost: int,
               call: AuditedCall | None = None) -> Caller:
        """The caller, once it is known, may call `rpc` and is within its rate for `cost` tokens.

        Every call costs at least one token (an empty batch too), and so does a refusal of a known
        caller, so that no kind of call is free."""
        caller = self._authenticator.authenticate(context)
        if call is not None:
            call.caller = caller.name
        try:
            caller.check_rpc(rpc)
            self._check_batch_size(caller, cost)
        except TokenServiceError:
            caller.check_rate(1)
            raise
        caller.check_rate(max(1, cost))
        return caller

    def _admit_mint(self, context: grpc.aio.ServicerContext, call: AuditedCall,
                    entries: Sequence[pb.MintTokenRequest]) -> Caller:
        """As `_admit`; a call refused as a whole is audited once, with its entry count, so that a
        cheap request cannot write many records. One refused over the rate of refusals before
        authentication is only counted (metric and summary record)."""
        try:
            return self._admit(context, call.rpc, len(entries), call)
        except PeerRateLimitedError as error:
            self._audit.count_unaudited(call.rpc, status_code_for(error).name, error.reason, len(entries))
            raise
        except TokenServiceError as error:
            self._record_refusal(call, entries, error)
            raise

    def _check_batch_size(self, caller: Caller, size: int) -> None:
        if size > self._batch_limit:
            raise BatchTooLargeError(
                f"requests: {size} entries exceed the batch limit of {self._batch_limit}; split the batch",
                field="requests")
        if caller.policy is not None and size > caller.policy.burst:
            raise BatchTooLargeError(
                f"requests: {size} entries exceed caller {caller.name!r}'s burst of {caller.policy.burst} tokens, "
                "so the batch could never pass its rate limit; split the batch", field="requests")

    def _mint_result(self, request: pb.MintTokenRequest, caller: Caller, call: AuditedCall) -> pb.MintTokenResult:
        try:
            return pb.MintTokenResult(token=self._mint(request, caller, call))
        except TokenServiceError as error:
            return pb.MintTokenResult(error=to_rpc_status(error))

    def _mint(self, request: pb.MintTokenRequest, caller: Caller, call: AuditedCall) -> pb.MintTokenResponse:
        org = request.org or self._default_org
        started = time.perf_counter()
        try:
            if caller.policy is not None:
                caller.check_org(org)
                caller.check_identities(request.email, request.external_id)
            identity = check_identity(request.external_id, request.email)
            secret = self._store.current(org)
            minted = self._minter.mint(secret, external_id=request.external_id, email=request.email)
        except TokenServiceError as error:
            self._metrics.mint_errors_total.labels(
                org=self._org_label(org), reason=error.reason, caller=caller.name).inc()
            self._record(call, request, error=error)
            raise
        self._metrics.mint_duration.observe(time.perf_counter() - started)
        self._issued_counter(org, identity.value, caller.name).inc()
        self._record(call, request, secret_version=minted.secret_version)
        return _mint_response(minted)

    def _issued_counter(self, org: str, identity: str, caller: str) -> Any:
        """The labelled counter, looked up once per label set: `labels()` showed in the batch profile.
        Bounded: orgs, identities and callers are configured sets."""
        key = (org, identity, caller)
        counter = self._issued_counters.get(key)
        if counter is None:
            counter = self._issued_counters[key] = self._metrics.tokens_issued_total.labels(
                org=org, identity=identity, caller=caller)
        return counter

    def _org_label(self, org: str) -> str:
        return org if self._store.knows(org) else UNKNOWN_ORG_LABEL

    def _record(self, call: AuditedCall, request: pb.MintTokenRequest, *,
                error: TokenServiceError | None = None, secret_version: int | None = None) -> None:
        if self._audit.enabled:
            call.attempts.append(MintAttempt(
                self._org_label(request.org or self._default_org), request.email, request.external_id,
                status_code_for(error).name if error else "OK", error.reason if error else None, secret_version))

    def _record_refusal(self, call: AuditedCall, entries: Sequence[pb.MintTokenRequest],
                        error: TokenServiceError) -> None:
        """One record for a call refused as a whole; it describes its entry only when it had exactly one."""
        if len(entries) == 1:
            self._record(call, entries[0], error=error)
        elif self._audit.enabled:
            call.attempts.append(MintAttempt(None, "", "", status_code_for(error).name, error.reason,
                                             entries=len(entries)))


def _mint_response(minted: MintedToken) -> pb.MintTokenResponse:
    response = pb.MintTokenResponse(token=minted.token, secret_version=minted.secret_version,
                                    identity_used=_IDENTITY_TO_PROTO[minted.identity_used])
    # Set in place: a Timestamp built apart is copied into the response.
    response.issued_at.seconds = minted.issued_at
    response.valid_until.seconds = minted.valid_until
    return response


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
