"""Regenerate the Python stubs of the KServe v2 protos: `python -m protos.generate [--out DIR]`.

Uses grpcio-tools (pinned in constraints.txt: its generated code must import beside the
protobuf < 7 that tritonclient requires). Two rewrites follow protoc: its top-level imports
(`import model_config_pb2`) become package-relative (`from protos import ...`), and the files
register in `protos.pool.POOL` rather than the default pool (see protos/pool.py).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
PROTOS = ("model_config.proto", "grpc_service.proto")
# protoc emits a *_pb2_grpc.py for every file; model_config has no service, so that one is empty.
GENERATED = ("model_config_pb2.py", "grpc_service_pb2.py", "grpc_service_pb2_grpc.py")
_TOP_LEVEL_IMPORT = re.compile(r"^import (\w+_pb2) as (\w+)$", re.MULTILINE)
_POOL_REWRITES = (
    (
        "from google.protobuf import descriptor_pool as _descriptor_pool",
        "from protos.pool import POOL as _POOL",
    ),
    ("_descriptor_pool.Default().AddSerializedFile(", "_POOL.AddSerializedFile("),
)


def generate(out_dir: Path) -> list[Path]:
    """Compile PROTOS into `out_dir` and fix their imports; returns the generated files."""
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(PROTO_DIR / name) for name in PROTOS),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    (out_dir / "model_config_pb2_grpc.py").unlink(missing_ok=True)
    paths = [out_dir / name for name in GENERATED]
    for path in paths:
        text = _TOP_LEVEL_IMPORT.sub(r"from protos import \1 as \2", path.read_text())
        for old, new in _POOL_REWRITES:
            text = text.replace(old, new)
        path.write_text(text)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=PROTO_DIR, help="output folder (default: protos/)"
    )
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
