"""A protoc plugin that runs one of grpcio-tools' built-in generators.

grpcio-tools carries protoc plus the gRPC Python generator as a library, not
as a protoc-gen-* program, and buf knows only protoc's own generators as
`protoc_builtin`. This plugin bridges the two: it writes the request's files
to a descriptor set, runs `grpc_tools.protoc --<NAME>_out` on it and hands the
output back to buf.

Usage (as a buf local plugin): python protoc_gen_grpctools.py grpc_python
"""

import os
import pathlib
import sys
import tempfile

from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2
from grpc_tools import protoc


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: protoc_gen_grpctools.py GENERATOR", file=sys.stderr)
        return 2
    generator = sys.argv[1]
    request = plugin_pb2.CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    response = plugin_pb2.CodeGeneratorResponse(
        supported_features=plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    with tempfile.TemporaryDirectory() as tmp:
        descriptors = os.path.join(tmp, "request.binpb")
        out = pathlib.Path(tmp, "out")
        out.mkdir()
        with open(descriptors, "wb") as f:
            f.write(descriptor_pb2.FileDescriptorSet(file=request.proto_file).SerializeToString())
        param = f"{request.parameter}:" if request.parameter else ""
        rc = protoc.main(
            [
                "grpc_tools.protoc",
                f"--descriptor_set_in={descriptors}",
                f"--{generator}_out={param}{out}",
                *request.file_to_generate,
            ]
        )
        if rc != 0:
            response.error = f"grpc_tools.protoc --{generator}_out exited {rc}"
        else:
            for path in sorted(p for p in out.rglob("*") if p.is_file()):
                response.file.add(name=path.relative_to(out).as_posix(), content=path.read_text())
    sys.stdout.buffer.write(response.SerializeToString())
    return 0


if __name__ == "__main__":
    sys.exit(main())
