"""Mint a Kustomer chat login token for one email and print only the token.

    TOKENSERVICE_ADDR=localhost:50051 python examples/mint.py someone@example.com

Retries UNAVAILABLE with exponential backoff; any other error (such as
INVALID_ARGUMENT for a bad email) fails at once.
"""

import os
import sys
import time

import grpc

from tokenservice.client import create_channel, error_reason
from tokenservice.v1 import token_service_pb2 as pb
from tokenservice.v1 import token_service_pb2_grpc as pb_grpc


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: mint.py EMAIL", file=sys.stderr)
        return 2
    addr = os.environ.get("TOKENSERVICE_ADDR", "localhost:50051")
    with create_channel(addr) as channel:
        stub = pb_grpc.TokenServiceStub(channel)
        backoff = 0.2
        for attempt in range(1, 6):
            try:
                response = stub.MintToken(pb.MintTokenRequest(email=sys.argv[1]), timeout=3.0)
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.UNAVAILABLE and attempt < 5:
                    print(f"mint: attempt {attempt}: UNAVAILABLE ({error_reason(error) or error.details()}); "
                          f"retrying in {backoff:.1f}s", file=sys.stderr)
                    time.sleep(backoff)
                    backoff *= 2
                    continue
                print(f"mint: {error.code().name} (reason {error_reason(error)!r}): {error.details()}",
                      file=sys.stderr)
                return 1
            print(response.token)
            return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
