"""Generate the Python code of Falco's legacy gRPC API from this folder's .proto files
(grpcio-tools, a dev dependency; the generated modules are committed and
tests/sensor/test_output_grpc.py checks that regenerating gives the same files).

    python -m falconer.sensor.grpc_api.generate     # rewrite the generated files here

The protos are compiled as `falconer/sensor/grpc_api/<name>.proto`, so the generated
imports are package imports (`from falconer.sensor.grpc_api import schema_pb2`).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

HERE = Path(__file__).parent
PROTOS = ("schema.proto", "outputs.proto", "version.proto")
PACKAGE = Path("falconer/sensor/grpc_api")


def generated_names() -> list[str]:
    """The generated files' names: `<name>_pb2.py` and `.pyi` for each proto, and
    `<name>_pb2_grpc.py` for those with a service."""
    names = []
    for proto in PROTOS:
        stem = proto.removesuffix(".proto")
        names += [f"{stem}_pb2.py", f"{stem}_pb2.pyi"]
        if "service " in (HERE / proto).read_text():
            names.append(f"{stem}_pb2_grpc.py")
    return names


def generate(out_dir: Path) -> list[Path]:
    """Compile the protos into `out_dir`; the written files. RuntimeError with protoc's
    exit code when it fails."""
    from grpc_tools import protoc  # type: ignore[import-untyped]  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / PACKAGE
        src.mkdir(parents=True)
        for proto in PROTOS:
            shutil.copyfile(HERE / proto, src / proto)
        well_known = resources.files("grpc_tools") / "_proto"
        code = protoc.main(["protoc", f"-I{tmp}", f"-I{well_known}", f"--python_out={tmp}",
                            f"--pyi_out={tmp}", f"--grpc_python_out={tmp}",
                            *(str(PACKAGE / p) for p in PROTOS)])
        if code != 0:
            raise RuntimeError(f"protoc failed with exit code {code}")
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name in generated_names():
            shutil.copyfile(src / name, out_dir / name)
            written.append(out_dir / name)
        return written


if __name__ == "__main__":
    for path in generate(HERE):
        print(path, file=sys.stderr)
