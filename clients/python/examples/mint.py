"""Mint a Kustomer chat login token for one email and print only the token.

    TOKENSERVICE_ADDR=localhost:50051 python examples/mint.py someone@example.com

Retries UNAVAILABLE with exponential backoff; any other error (such as
INVALID_ARGUMENT for a bad email, UNAUTHENTICATED for a wrong API key)
fails at once.

TLS and the API key come from the environment (the same variables in every
language's example):

    TOKENSERVICE_CA_FILE          PEM CA bundle that verifies the server (turns TLS on)
    TOKENSERVICE_CERT_FILE        PEM client certificate for mTLS (with TOKENSERVICE_KEY_FILE;
    TOKENSERVICE_KEY_FILE         PEM client key                    both turn TLS on)
    TOKENSERVICE_TLS_SERVER_NAME  name to check in the server's certificate (turns TLS on)
    TOKENSERVICE_API_KEY          sent as `authorization: Bearer <key>`; needs TLS

With none of the TLS variables set the channel is plaintext; with TLS on and
no CA file, gRPC's default roots verify the server. A bad setting or an
unreadable file exits with status 2.
"""

import os
import sys
import time

import grpc

from tokenservice.client import TLSFileError, create_channel, error_reason
from tokenservice.v1 import token_service_pb2 as pb
from tokenservice.v1 import token_service_pb2_grpc as pb_grpc

# create_channel's keyword for each variable, to name the variable in errors.
TLS_ENV = {
    "ca_file": "TOKENSERVICE_CA_FILE",
    "cert_file": "TOKENSERVICE_CERT_FILE",
    "key_file": "TOKENSERVICE_KEY_FILE",
    "server_name": "TOKENSERVICE_TLS_SERVER_NAME",
}


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: mint.py EMAIL", file=sys.stderr)
        return 2
    addr = os.environ.get("TOKENSERVICE_ADDR", "localhost:50051")
    tls = {arg: os.environ.get(var) or None for arg, var in TLS_ENV.items()}
    api_key = os.environ.get("TOKENSERVICE_API_KEY") or None
    if (tls["cert_file"] is None) != (tls["key_file"] is None):
        print("mint: set both TOKENSERVICE_CERT_FILE and TOKENSERVICE_KEY_FILE (mTLS) or neither", file=sys.stderr)
        return 2
    if api_key is not None and not any(tls.values()):
        print(
            "mint: TOKENSERVICE_API_KEY needs TLS, refusing to send it in plaintext: set "
            "TOKENSERVICE_CA_FILE (or TOKENSERVICE_CERT_FILE and TOKENSERVICE_KEY_FILE, or "
            "TOKENSERVICE_TLS_SERVER_NAME to use the system roots)",
            file=sys.stderr,
        )
        return 2
    try:
        channel = create_channel(
            addr,
            api_key=api_key,
            ca_file=tls["ca_file"],
            cert_file=tls["cert_file"],
            key_file=tls["key_file"],
            server_name=tls["server_name"],
        )
    except TLSFileError as error:
        print(f"mint: {TLS_ENV[error.option]}: {error.path}: {error.problem}", file=sys.stderr)
        return 2
    except ValueError as error:  # e.g. an API key with a line break; the message never holds the key
        print(f"mint: {error}", file=sys.stderr)
        return 2
    with channel:
        stub = pb_grpc.TokenServiceStub(channel)
        backoff = 0.2
        for attempt in range(1, 6):
            try:
                response = stub.MintToken(pb.MintTokenRequest(email=sys.argv[1]), timeout=3.0)
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.UNAVAILABLE and attempt < 5:
                    print(
                        f"mint: attempt {attempt}: UNAVAILABLE ({error_reason(error) or error.details()}); "
                        f"retrying in {backoff:.1f}s",
                        file=sys.stderr,
                    )
                    time.sleep(backoff)
                    backoff *= 2
                    continue
                print(f"mint: {error.code().name} (reason {error_reason(error)!r}): {error.details()}", file=sys.stderr)
                return 1
            print(response.token)
            return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
