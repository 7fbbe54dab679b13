"""Which caller a client certificate names, against a real `tokenservice serve`.

Threat: grpc reports a certificate's SPIFFE ID (`peer_spiffe_id`) only when it
has exactly one URI SAN and that URI is a well-formed SPIFFE ID. A
certificate with several URI SANs, or a malformed one, therefore looked like
a certificate without any, and its caller was chosen by its DNS SANs: a
workload certificate whose SPIFFE ID names one service could be taken as a
different, DNS-named caller. The rule (README, "Callers") is the SPIFFE URI
SAN when there is one; a certificate carrying any URI SAN that grpc does not
report as its SPIFFE ID is now refused, UNAUTHENTICATED CREDENTIALS_INVALID.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tokenservice.v1 import token_service_pb2 as pb
from tokenservice.v1 import token_service_pb2_grpc as pb_grpc

from tests.certificates import CertificateAuthority
from tests.secured import CERTIFICATE_CALLER_SPIFFE_ID, Caller, SecuredFiles, start_secured_service
from tests.support import ServiceProcess, aio_health_stub, hs256_open, refusal_of

SUPPORT_DNS_NAME = "support.internal.example"
SUPPORT = Caller(dns_name=SUPPORT_DNS_NAME, orgs=("acme",))
OTHER_SPIFFE_ID = "spiffe://corp.example/ns/tools/sa/other"


@pytest.fixture(scope="module")
def secured(openbao, tmp_path_factory) -> Iterator[tuple[ServiceProcess, SecuredFiles]]:
    service, files = start_secured_service(
        openbao, tmp_path_factory.mktemp("certificates"), extra_callers={"support": SUPPORT}
    )
    try:
        yield service, files
    finally:
        service.terminate()


def mint_with(service: ServiceProcess, files: SecuredFiles, request_id: str, **sans: tuple[str, ...]):
    client = files.ca.issue(f"client-{uuid.uuid4().hex[:8]}", **sans)
    credentials = grpc.ssl_channel_credentials(files.ca.cert_pem, client.key_pem, client.cert_pem)
    with grpc.secure_channel(service.grpc_target, credentials) as channel:
        return pb_grpc.TokenServiceStub(channel).MintToken(
            pb.MintTokenRequest(email="ada@example.com"), metadata=(("x-request-id", request_id),), timeout=5
        )


@pytest.mark.parametrize(
    "uris",
    [
        pytest.param((CERTIFICATE_CALLER_SPIFFE_ID, OTHER_SPIFFE_ID), id="two SPIFFE IDs"),
        pytest.param(
            (CERTIFICATE_CALLER_SPIFFE_ID, "https://corp.example/checkout"), id="a SPIFFE ID and an https URI"
        ),
        pytest.param(("spiffe://corp.example",), id="a SPIFFE ID without a path"),
        pytest.param(("SPIFFE://corp.example/ns/shop/sa/checkout",), id="an upper-case scheme"),
        pytest.param(("https://corp.example/checkout",), id="an https URI"),
        pytest.param((CERTIFICATE_CALLER_SPIFFE_ID + "/",), id="a trailing slash"),
    ],
)
def test_a_uri_san_that_is_not_the_spiffe_id_is_refused_whatever_the_dns_sans(secured, uris):
    service, files = secured
    request_id = f"uri-{uuid.uuid4().hex[:8]}"
    with pytest.raises(grpc.RpcError) as raised:
        mint_with(service, files, request_id, uris=uris, dns=(SUPPORT_DNS_NAME,))
    code, reason, _ = refusal_of(raised.value)
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIALS_INVALID")
    details = raised.value.details() or ""
    assert "URI SAN" in details or "no configured caller" in details
    [record] = [r for r in service.audit_records() if r["request_id"] == request_id]
    assert (record["caller"], record["reason"]) == ("unknown", "CREDENTIALS_INVALID")


@pytest.mark.parametrize(
    "sans, caller",
    [
        pytest.param(
            {"uris": (CERTIFICATE_CALLER_SPIFFE_ID,), "dns": (SUPPORT_DNS_NAME,)},
            "checkout",
            id="one SPIFFE ID wins over the DNS SANs",
        ),
        pytest.param({"dns": ("other.internal.example", SUPPORT_DNS_NAME)}, "support", id="DNS SANs alone"),
    ],
)
def test_the_caller_is_the_spiffe_id_else_a_dns_name(secured, sans, caller):
    service, files = secured
    request_id = f"ok-{uuid.uuid4().hex[:8]}"
    minted = mint_with(service, files, request_id, **sans)
    assert hs256_open(minted.token, files.secret)[1]["email"] == "ada@example.com"
    [record] = [r for r in service.audit_records() if r["request_id"] == request_id]
    assert (record["caller"], record["status"]) == (caller, "OK")


class _AuthContextRecorder(health_pb2_grpc.HealthServicer):
    def __init__(self) -> None:
        self.seen: dict[str, dict[str, list[bytes]]] = {}

    async def Check(self, request, context):
        self.seen[request.service] = context.auth_context()
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


async def auth_contexts(directory: Path, certificates: dict[str, dict]) -> dict[str, dict[str, list[bytes]]]:
    """The auth_context grpc gives a server for a client certificate of each set of SANs."""
    ca = CertificateAuthority(directory)
    server_certificate = ca.issue_server()
    recorder = _AuthContextRecorder()
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(recorder, server)
    port = server.add_secure_port(
        "127.0.0.1:0",
        grpc.ssl_server_credentials([(server_certificate.key_pem, server_certificate.cert_pem)], ca.cert_pem, True),
    )
    await server.start()
    try:
        for name, sans in certificates.items():
            client = ca.issue(name, **sans)
            credentials = grpc.ssl_channel_credentials(ca.cert_pem, client.key_pem, client.cert_pem)
            async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
                await aio_health_stub(channel).Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
    finally:
        await server.stop(0)
    return recorder.seen


def test_grpc_reports_every_uri_san_and_a_spiffe_id_only_for_a_single_well_formed_one(tmp_path):
    """What service/callers.py relies on, in the grpcio installed: `peer_uri` lists the URI SANs."""
    seen = asyncio.run(
        auth_contexts(
            tmp_path,
            {
                "one": {"uris": (CERTIFICATE_CALLER_SPIFFE_ID,), "dns": (SUPPORT_DNS_NAME,)},
                "two": {"uris": (CERTIFICATE_CALLER_SPIFFE_ID, OTHER_SPIFFE_ID), "dns": (SUPPORT_DNS_NAME,)},
                "malformed": {"uris": ("spiffe://corp.example",), "dns": (SUPPORT_DNS_NAME,)},
                "dns-only": {"dns": (SUPPORT_DNS_NAME,)},
            },
        )
    )
    assert seen["one"]["peer_spiffe_id"] == seen["one"]["peer_uri"] == [CERTIFICATE_CALLER_SPIFFE_ID.encode()]
    assert seen["two"]["peer_uri"] == [CERTIFICATE_CALLER_SPIFFE_ID.encode(), OTHER_SPIFFE_ID.encode()]
    assert seen["malformed"]["peer_uri"] == [b"spiffe://corp.example"]
    for name in ("two", "malformed"):
        assert "peer_spiffe_id" not in seen[name] and seen[name]["peer_dns"] == [SUPPORT_DNS_NAME.encode()]
    assert "peer_uri" not in seen["dns-only"] and "peer_spiffe_id" not in seen["dns-only"]
