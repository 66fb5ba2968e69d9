"""Regenerates the Python and TypeScript stubs from proto/ (or, with --check, fails when they are stale).

The TypeScript stubs (clients/ts/src/gen) come from `buf generate --template buf.gen.ts.yaml`, whose plugin
`make dev` installs into clients/ts/node_modules (npm ci).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT_ROOT = ROOT / "clients" / "python"
GEN_SUBDIR = Path("queue_manager") / "v1"
TS_TEMPLATE = ROOT / "buf.gen.ts.yaml"
TS_GEN = Path("clients") / "ts" / "src" / "gen"
TS_PLUGIN = ROOT / "clients" / "ts" / "node_modules" / ".bin" / "protoc-gen-es"


def generate(out_root: Path) -> None:
    """Runs protoc with the Python, gRPC and mypy plugins into out_root."""
    # The mypy plugins are console scripts next to this interpreter.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    wkt = Path(protoc.__file__).parent / "_proto"
    files = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / GEN_SUBDIR).glob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{wkt}",
        f"--python_out={out_root}",
        f"--grpc_python_out={out_root}",
        f"--mypy_out={out_root}",
        f"--mypy_grpc_out={out_root}",
        *files,
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    init = out_root / GEN_SUBDIR / "__init__.py"
    init.write_text('"""Generated protobuf and gRPC stubs (do not edit; run `make proto`)."""\n')


def generate_ts(out_root: Path) -> None:
    """Runs buf with the TypeScript template; the stubs land in out_root / clients/ts/src/gen."""
    if not TS_PLUGIN.exists():
        sys.exit(f"{TS_PLUGIN.relative_to(ROOT)} is missing: run `make dev` (npm ci in clients/ts)")
    buf = Path(sys.executable).parent / "buf"
    cmd = [str(buf), "generate", "--template", str(TS_TEMPLATE), "-o", str(out_root)]
    if subprocess.run(cmd, cwd=ROOT).returncode != 0:
        sys.exit("buf generate (TypeScript) failed")


def ts_files(root: Path) -> dict[str, bytes]:
    d = root / TS_GEN
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*.ts"))} if d.exists() else {}


def generated_files(root: Path) -> set[str]:
    d = root / GEN_SUBDIR
    return (
        {p.name for p in d.iterdir() if p.is_file() and p.suffix in {".py", ".pyi"}} if d.exists() else set()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed stubs differ")
    args = parser.parse_args()
    if not args.check:
        target = OUT_ROOT / GEN_SUBDIR
        for p in target.glob("*_pb2*.py*"):
            p.unlink()
        generate(OUT_ROOT)
        for p in (ROOT / TS_GEN).rglob("*_pb.ts"):
            p.unlink()
        generate_ts(ROOT)
        return
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh, committed = generated_files(Path(tmp)), generated_files(OUT_ROOT)
        stale = sorted(
            name
            for name in fresh | committed
            if name not in fresh
            or name not in committed
            or not filecmp.cmp(Path(tmp) / GEN_SUBDIR / name, OUT_ROOT / GEN_SUBDIR / name, shallow=False)
        )
        generate_ts(Path(tmp))
        fresh_ts, committed_ts = ts_files(Path(tmp)), ts_files(ROOT)
        stale += sorted(
            f"{TS_GEN}/{name}"
            for name in fresh_ts.keys() | committed_ts.keys()
            if fresh_ts.get(name) != committed_ts.get(name)
        )
        if stale:
            sys.exit(f"generated code is stale ({', '.join(stale)}); run `make proto` and commit")
        shutil.rmtree(tmp, ignore_errors=True)
    print("generated code is up to date")


if __name__ == "__main__":
    main()
