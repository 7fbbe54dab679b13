"""The TokenService RPCs, and their registration on a gRPC server.

Handlers raise TokenServiceError; `rpc_handlers` turns those into statuses
with an ErrorInfo detail, turns undecodable request bytes into
INVALID_ARGUMENT (grpc.aio would report them as UNKNOWN), and turns any
other exception into INTERNAL without leaking its text.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
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
from service.grpc_types import Behavior, ServicerContext, invocation_metadata
from service.metrics import UNKNOWN_ORG_LABEL, Metrics
from service.minting import (
    TOKEN_MAX_BYTES,
    Identity,
    MintedToken,
    TokenMinter,
    TokenVerifier,
    UnsignedToken,
    Verification,
    check_identity,
)
from service.secrets import SecretStore
from service.signing import vault_timeout
from service.tracing import annotate, current_trace_ids
from service.transit import TransitSigner

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["TokenService"].full_name

# The span attribute of the identity a minted token asserts: its kind, never its value.
_IDENTITY_KIND = {identity.proto: identity.value for identity in Identity}


def _timestamp(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


_REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# Request ids made here: a random per-process prefix and a counter (uuid4 cost a syscall per call).
_REQUEST_ID_PREFIX = secrets.token_hex(8)
_request_numbers = itertools.count()


def _audited_call(context: ServicerContext, rpc: str, traced: bool) -> AuditedCall:
    request_id = next((value for name, value in invocation_metadata(context) if name == "x-request-id"), "")
    if not isinstance(request_id, str) or not _REQUEST_ID_PATTERN.fullmatch(request_id):
        request_id = f"{_REQUEST_ID_PREFIX}{next(_request_numbers):016x}"
    return AuditedCall(rpc, request_id, context.peer() or "", trace=current_trace_ids() if traced else None)


class TokenServicer:
    """Mints and verifies tokens with the store's current secrets, for the callers
    the authenticator recognises, within their policies; every mint attempt is audited.

    Orgs in `transit` are signed by their Vault Transit signer instead: those mints await Vault,
    with what is left of the call's deadline. A call that names no such org takes the synchronous
    KV path alone."""

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
        transit: Mapping[str, TransitSigner] | None = None,
        traced: bool = False,
    ) -> None:
        """`traced`: whether calls run in spans (service/tracing.py); off, the span hooks are skipped, not
        called to return at once, which measured 0.8 % of an untraced MintToken's instructions."""
        self._store = store
        self._traced = traced
        self._transit = dict(transit or {})
        self._minter = minter
        self._verifier = verifier
        self._metrics = metrics
        self._authenticator = authenticator
        self._audit = audit
        self._default_org = default_org
        self._batch_limit = batch_limit
        self._issued_counters: dict[tuple[str, str, str], Any] = {}

    async def MintToken(self, request: pb.MintTokenRequest, context: ServicerContext) -> pb.MintTokenResponse:
        call = _audited_call(context, "MintToken", self._traced)
        try:
            caller = self._admit_mint(context, call, [request])
            if self._transit and (request.org or self._default_org) in self._transit:
                (response,) = await self._mint_through_transit([request], caller, call, context)
                if isinstance(response, TokenServiceError):
                    raise response
            else:
                response = self._mint(request, caller, call)
        except Exception:
            await self._audit.write(call, serves_tokens=False)
            raise
        if call.trace is not None:  # the call's span is recorded
            annotate(
                org=request.org or self._default_org,
                identity_kind=_IDENTITY_KIND[response.identity_used],
                secret_version=response.secret_version,
            )
        # No token leaves without its audit record: this raises AUDIT_UNAVAILABLE when it is not written.
        await self._audit.write(call, serves_tokens=True)
        return response

    async def MintTokens(self, request: pb.MintTokensRequest, context: ServicerContext) -> pb.MintTokensResponse:
        call = _audited_call(context, "MintTokens", self._traced)
        if call.trace is not None:
            annotate(batch_size=len(request.requests))
        try:
            caller = self._admit_mint(context, call, request.requests)
            if self._transit and any((entry.org or self._default_org) in self._transit for entry in request.requests):
                results = await self._mint_results_with_transit(request.requests, caller, call, context)
            else:
                results = [self._mint_result(entry, caller, call) for entry in request.requests]
        except Exception:
            await self._audit.write(call, serves_tokens=False)
            raise
        await self._audit.write(call, serves_tokens=any(attempt.status == "OK" for attempt in call.attempts))
        return pb.MintTokensResponse(results=results)

    async def VerifyToken(self, request: pb.VerifyTokenRequest, context: ServicerContext) -> pb.VerifyTokenResponse:
        org = request.org or self._default_org
        if self._traced:
            annotate(org=org)
        self._admit(context, "VerifyToken", cost=1).check_org(org)
        if not request.token:
            raise TokenMissingError("token: required; pass the token to check", field="token")
        if len(request.token) > TOKEN_MAX_BYTES:
            raise TokenTooLargeError(
                f"token: longer than {TOKEN_MAX_BYTES} bytes, which no token of this service is", field="token"
            )
        if self._transit and org in self._transit:
            outcome = await self._verify_through_transit(request.token, self._transit[org], context)
        else:
            outcome = self._verifier.verify(request.token, self._store.current(org).key)
        response = pb.VerifyTokenResponse(
            valid=outcome.valid,
            reason=outcome.reason,
            detail=outcome.detail,
            external_id=outcome.external_id,
            email=outcome.email,
        )
        if outcome.issued_at is not None:
            response.issued_at.CopyFrom(_timestamp(outcome.issued_at))
        if outcome.valid_until is not None:
            response.valid_until.CopyFrom(_timestamp(outcome.valid_until))
        if outcome.identity_used is not None:
            response.identity_used = outcome.identity_used.proto
        return response

    def _admit(self, context: ServicerContext, rpc: str, cost: int, call: AuditedCall | None = None) -> Caller:
        """The caller, once it is known, may call `rpc` and is within its rate for `cost` tokens.

        Every call costs at least one token (an empty batch too), and so does a refusal of a known
        caller, so that no kind of call is free."""
        caller = self._authenticator.authenticate(context)
        # An audited call knows whether its span is recorded (it has trace ids); annotating one that is not
        # would return at once.
        if self._traced if call is None else call.trace is not None:
            annotate(caller=caller.name)
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

    def _admit_mint(
        self, context: ServicerContext, call: AuditedCall, entries: Sequence[pb.MintTokenRequest]
    ) -> Caller:
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
                field="requests",
            )
        if caller.policy is not None and size > caller.policy.burst:
            raise BatchTooLargeError(
                f"requests: {size} entries exceed caller {caller.name!r}'s burst of {caller.policy.burst} tokens, "
                "so the batch could never pass its rate limit; split the batch",
                field="requests",
            )

    def _mint_result(self, request: pb.MintTokenRequest, caller: Caller, call: AuditedCall) -> pb.MintTokenResult:
        try:
            return pb.MintTokenResult(token=self._mint(request, caller, call))
        except TokenServiceError as error:
            return pb.MintTokenResult(error=to_rpc_status(error))

    def _mint(self, request: pb.MintTokenRequest, caller: Caller, call: AuditedCall) -> pb.MintTokenResponse:
        org = request.org or self._default_org
        started = time.perf_counter()
        try:
            self._check_mint(request, org, caller)
            secret = self._store.current(org)
            minted = self._minter.mint(secret, external_id=request.external_id, email=request.email)
        except TokenServiceError as error:
            self._refused(request, org, caller, call, error)
            raise
        return self._issued(request, org, caller, call, minted, started)

    def _check_mint(self, request: pb.MintTokenRequest, org: str, caller: Caller) -> None:
        """Raise when the caller may not mint this, or the identities break a rule."""
        if caller.policy is not None:
            caller.check_org(org)
            caller.check_identities(request.email, request.external_id)
        check_identity(request.external_id, request.email)

    def _refused(
        self, request: pb.MintTokenRequest, org: str, caller: Caller, call: AuditedCall, error: TokenServiceError
    ) -> TokenServiceError:
        """`error`, counted and audited as the entry's outcome."""
        self._metrics.mint_errors_total.labels(org=self._org_label(org), reason=error.reason, caller=caller.name).inc()
        self._record(call, request, error=error)
        return error

    def _issued(
        self,
        request: pb.MintTokenRequest,
        org: str,
        caller: Caller,
        call: AuditedCall,
        minted: MintedToken,
        started: float,
    ) -> pb.MintTokenResponse:
        """The response for `minted`, counted and audited."""
        self._metrics.mint_duration.observe(time.perf_counter() - started)
        self._issued_counter(org, minted.identity_used.value, caller.name).inc()
        self._record(call, request, secret_version=minted.secret_version)
        return _mint_response(minted)

    async def _mint_results_with_transit(
        self,
        entries: Sequence[pb.MintTokenRequest],
        caller: Caller,
        call: AuditedCall,
        context: ServicerContext,
    ) -> list[pb.MintTokenResult]:
        """A batch naming transit orgs: its other entries minted at once, the transit ones awaited together."""
        in_transit = [(entry.org or self._default_org) in self._transit for entry in entries]
        results = [
            None if transit else self._mint_result(entry, caller, call)
            for entry, transit in zip(entries, in_transit, strict=True)
        ]
        outcomes = iter(
            await self._mint_through_transit(
                [entry for entry, transit in zip(entries, in_transit, strict=True) if transit], caller, call, context
            )
        )
        return [result if result is not None else _result_of(next(outcomes)) for result in results]

    async def _mint_through_transit(
        self,
        entries: Sequence[pb.MintTokenRequest],
        caller: Caller,
        call: AuditedCall,
        context: ServicerContext,
    ) -> list[pb.MintTokenResponse | TokenServiceError]:
        """Mint entries of transit orgs: the checks as for any mint, then each org's signatures in one
        `sign_many`, the orgs concurrently, within the call's deadline. An outcome per entry, in order."""
        started = time.perf_counter()
        outcomes: dict[int, pb.MintTokenResponse | TokenServiceError] = {}
        unsigned: dict[str, list[tuple[int, UnsignedToken]]] = {}
        for index, entry in enumerate(entries):
            org = entry.org or self._default_org
            try:
                self._check_mint(entry, org, caller)
            except TokenServiceError as error:
                outcomes[index] = self._refused(entry, org, caller, call, error)
                continue
            token = self._minter.unsigned(external_id=entry.external_id, email=entry.email)
            unsigned.setdefault(org, []).append((index, token))
        timeout = vault_timeout(context.time_remaining())
        signing = [
            self._transit[org].sign_many([token.signing_input for _, token in tokens], timeout=timeout)
            for org, tokens in unsigned.items()
        ]
        # One org, as for every MintToken, is awaited here: gather would give it a task of its own.
        signed = [await signing[0]] if len(signing) == 1 else await asyncio.gather(*signing)
        for (org, tokens), signatures in zip(unsigned.items(), signed, strict=True):
            for (index, token), signature in zip(tokens, signatures, strict=True):
                entry = entries[index]
                outcomes[index] = (
                    self._refused(entry, org, caller, call, signature)
                    if isinstance(signature, TokenServiceError)
                    else self._issued(
                        entry, org, caller, call, token.signed(signature.mac, signature.key_version), started
                    )
                )
        return [outcomes[index] for index in range(len(entries))]

    async def _verify_through_transit(
        self, token: str, signer: TransitSigner, context: ServicerContext
    ) -> Verification:
        """As TokenVerifier.verify, with Transit checking the signature against the key's latest version;
        a token of the wrong form is refused before Vault is asked."""
        signed = self._verifier.parse(token)
        if isinstance(signed, Verification):
            return signed
        matches = await signer.verify_signature(
            signed.signing_input, signed.signature, timeout=vault_timeout(context.time_remaining())
        )
        return self._verifier.conclude(signed, signature_matches=matches)

    def _issued_counter(self, org: str, identity: str, caller: str) -> Any:
        """The labelled counter, looked up once per label set: `labels()` showed in the batch profile.
        Bounded: orgs, identities and callers are configured sets."""
        key = (org, identity, caller)
        counter = self._issued_counters.get(key)
        if counter is None:
            counter = self._issued_counters[key] = self._metrics.tokens_issued_total.labels(
                org=org, identity=identity, caller=caller
            )
        return counter

    def _org_label(self, org: str) -> str:
        return org if self._store.knows(org) else UNKNOWN_ORG_LABEL

    def _record(
        self,
        call: AuditedCall,
        request: pb.MintTokenRequest,
        *,
        error: TokenServiceError | None = None,
        secret_version: int | None = None,
    ) -> None:
        if self._audit.enabled:
            call.attempts.append(
                MintAttempt(
                    self._org_label(request.org or self._default_org),
                    request.email,
                    request.external_id,
                    status_code_for(error).name if error else "OK",
                    error.reason if error else None,
                    secret_version,
                )
            )

    def _record_refusal(
        self, call: AuditedCall, entries: Sequence[pb.MintTokenRequest], error: TokenServiceError
    ) -> None:
        """One record for a call refused as a whole; it describes its entry only when it had exactly one."""
        if len(entries) == 1:
            self._record(call, entries[0], error=error)
        elif self._audit.enabled:
            call.attempts.append(
                MintAttempt(None, "", "", status_code_for(error).name, error.reason, entries=len(entries))
            )


def _result_of(outcome: pb.MintTokenResponse | TokenServiceError) -> pb.MintTokenResult:
    if isinstance(outcome, TokenServiceError):
        return pb.MintTokenResult(error=to_rpc_status(outcome))
    return pb.MintTokenResult(token=outcome)


def _mint_response(minted: MintedToken) -> pb.MintTokenResponse:
    response = pb.MintTokenResponse(
        token=minted.token, secret_version=minted.secret_version, identity_used=minted.identity_used.proto
    )
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
    async def handle(request: Any, context: ServicerContext) -> Any:
        try:
            if isinstance(request, _Undecodable):
                raise RequestMalformedError(
                    f"request: the bytes do not parse as a {request_name}; regenerate your stubs from "
                    "protos/tokenservice/v1/token_service.proto"
                )
            return await method(request, context)
        except TokenServiceError as error:
            annotate(error_reason=error.reason)
            await abort_with_error(context, error)
        except Exception:
            logger.exception("unexpected error in %s", request_name)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; the service logged it")

    return handle


def rpc_handlers(servicer: TokenServicer) -> grpc.GenericRpcHandler:
    """The TokenService method handlers for `servicer`."""
    methods: dict[str, tuple[type[protobuf_message.Message], Behavior]] = {
        "MintToken": (pb.MintTokenRequest, servicer.MintToken),
        "MintTokens": (pb.MintTokensRequest, servicer.MintTokens),
        "VerifyToken": (pb.VerifyTokenRequest, servicer.VerifyToken),
    }
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        name: grpc.unary_unary_rpc_method_handler(
            _guarded(method, request_type.DESCRIPTOR.name),
            request_deserializer=_tolerant(request_type.FromString),
            response_serializer=lambda response: response.SerializeToString(),
        )
        for name, (request_type, method) in methods.items()
    }
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)
