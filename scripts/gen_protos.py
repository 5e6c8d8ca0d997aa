"""Regenerate the gRPC client code from protos/ and lint the protos.

    python scripts/gen_protos.py            # write client/gigaudit/v1/*_pb2.py, *_pb2_grpc.py, *_pb2.pyi
    python scripts/gen_protos.py --check    # exit 1 when the committed code is stale or `buf lint` fails

The googleapis imports (google/longrunning, google/api, google/rpc) come from the installed
googleapis-common-protos, which ships google/longrunning/operations.proto as ``operations_proto.proto``; the well-known
types come from grpcio-tools. `buf lint` (from buf-bin) runs on a protoc-built image, so it needs no network.
"""
from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import google.api
import google.longrunning
import google.rpc
import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
PACKAGE_DIR = "gigaudit/v1"
OUT_DIR = ROOT / "client" / PACKAGE_DIR
INIT = '"""Generated gRPC code for the gigaudit.v1 API (scripts/gen_protos.py). Do not edit."""\n'
GENERATED_SUFFIXES = ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")


def _googleapis_includes(into: Path) -> Path:
    """Lay out the googleapis .proto files under their import paths in ``into``."""
    for package in (google.api, google.longrunning, google.rpc):
        src = Path(package.__path__[0])
        dst = into / "google" / src.name
        dst.mkdir(parents=True, exist_ok=True)
        for proto in src.glob("*.proto"):
            name = "operations.proto" if proto.name == "operations_proto.proto" else proto.name
            shutil.copyfile(proto, dst / name)
    return into


def _protoc(*args: str) -> None:
    well_known = Path(grpc_tools.__path__[0]) / "_proto"
    code = protoc.main(["protoc", f"-I{PROTO_ROOT}", f"-I{well_known}", *args])
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


def generate(out: Path, includes: Path) -> None:
    """Write the generated modules and an ``__init__.py`` into ``out``."""
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    flat = out / "_flat"
    flat.mkdir(parents=True)
    _protoc(f"-I{includes}", f"--python_out={flat}", f"--pyi_out={flat}", f"--grpc_python_out={flat}", *protos)
    # Proto paths gigaudit/v1/x.proto map onto the module gigaudit.v1.x_pb2: imports need no rewriting.
    for path in (flat / PACKAGE_DIR).iterdir():
        shutil.move(path, out / path.name)
    shutil.rmtree(flat)
    (out / "__init__.py").write_text(INIT)


def lint(includes: Path, workdir: Path) -> bool:
    """``buf lint`` with protos/buf.yaml on an image of our protos (imports included, only ours linted)."""
    image = workdir / "image.binpb"
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE_DIR).glob("*.proto"))
    _protoc(f"-I{includes}", f"--descriptor_set_out={image}", "--include_imports", "--include_source_info", *protos)
    cmd = ["buf", "lint", f"{image}#format=binpb", "--config", str(PROTO_ROOT / "buf.yaml"), "--path", PACKAGE_DIR]
    result = subprocess.run(cmd, capture_output=True, text=True)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode == 0


def _generated(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(GENERATED_SUFFIXES) or p.name == "__init__.py")


def stale(fresh: Path) -> list[str]:
    """Names of the committed files that differ from (or are missing in) a fresh generation."""
    committed = set(_generated(OUT_DIR)) if OUT_DIR.exists() else set()
    names = set(_generated(fresh)) | committed
    return sorted(n for n in names if n not in committed or not (fresh / n).exists()
                  or not filecmp.cmp(fresh / n, OUT_DIR / n, shallow=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail when committed code is stale or lint fails")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        includes = _googleapis_includes(tmp / "include")
        fresh = tmp / "out"
        fresh.mkdir()
        generate(fresh, includes)
        lint_ok = lint(includes, tmp)
        if args.check:
            differing = stale(fresh)
            if differing:
                print(f"stale generated code in {OUT_DIR.relative_to(ROOT)}: {', '.join(differing)}; "
                      "run python scripts/gen_protos.py", file=sys.stderr)
            return 0 if lint_ok and not differing else 1
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        for name in _generated(OUT_DIR):
            (OUT_DIR / name).unlink()
        for name in _generated(fresh):
            shutil.copyfile(fresh / name, OUT_DIR / name)
        print(f"wrote {len(_generated(fresh))} files to {OUT_DIR.relative_to(ROOT)}")
        return 0 if lint_ok else 1


if __name__ == "__main__":
    sys.exit(main())
