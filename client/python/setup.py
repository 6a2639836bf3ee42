"""Builds autoquant_client and generates its gRPC stubs from the repository's proto/ (none are
checked in, so the client can never drift from the API it talks to).

The proto is looked up, in order, in $AUTOQUANT_PROTO_DIR, in ./proto (an unpacked source tree that
carries its own copy) and in ../../proto (this directory inside the autoquant repository, which is
what `pip install ./client/python` builds from: pip builds in place)."""
import os
import pathlib
import re
import tempfile

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = pathlib.Path(__file__).resolve().parent
PROTO = "autoquant/v1/autoquant.proto"


def proto_root() -> pathlib.Path:
    candidates = [os.environ.get("AUTOQUANT_PROTO_DIR"), HERE / "proto", HERE.parent.parent / "proto"]
    for c in candidates:
        if c and (pathlib.Path(c) / PROTO).is_file():
            return pathlib.Path(c)
    raise SystemExit(f"autoquant_client: {PROTO} not found in $AUTOQUANT_PROTO_DIR, {HERE / 'proto'} or "
                     f"{HERE.parent.parent / 'proto'}; build from the autoquant repository or set AUTOQUANT_PROTO_DIR")


def generate_stubs(dest: pathlib.Path) -> None:
    """Writes autoquant_pb2.py and autoquant_pb2_grpc.py into dest (the package autoquant_client._proto)."""
    import grpc_tools
    from grpc_tools import protoc
    root = proto_root()
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        # -I at proto/ keeps the file's registered name "autoquant/v1/autoquant.proto", the same as
        # every other generator in the repository uses, so both can share one descriptor pool.
        rc = protoc.main(["protoc", f"-I{root}", f"-I{well_known}", f"--python_out={tmp}",
                          f"--grpc_python_out={tmp}", str(root / PROTO)])
        if rc != 0:
            raise SystemExit(f"autoquant_client: protoc failed on {root / PROTO}")
        dest.mkdir(parents=True, exist_ok=True)
        gen = pathlib.Path(tmp) / "autoquant" / "v1"
        (dest / "autoquant_pb2.py").write_text((gen / "autoquant_pb2.py").read_text())
        # The plugin imports the messages as a top-level package "autoquant.v1"; inside our package
        # they are a sibling module.
        grpc_src = (gen / "autoquant_pb2_grpc.py").read_text()
        grpc_src, n = re.subn(r"^from autoquant\.v1 import autoquant_pb2 as", "from . import autoquant_pb2 as",
                              grpc_src, flags=re.M)
        if n != 1:
            raise SystemExit("autoquant_client: unexpected import layout in the generated gRPC stub")
        (dest / "autoquant_pb2_grpc.py").write_text(grpc_src)
        (dest / "__init__.py").write_text(f'"""Generated at build time from {PROTO}."""\n')


class BuildPyWithStubs(build_py):
    def run(self):
        super().run()
        generate_stubs(pathlib.Path(self.build_lib) / "autoquant_client" / "_proto")

    def get_outputs(self, include_bytecode=True):
        dest = pathlib.Path(self.build_lib) / "autoquant_client" / "_proto"
        generated = [str(dest / n) for n in ("__init__.py", "autoquant_pb2.py", "autoquant_pb2_grpc.py")]
        return super().get_outputs(include_bytecode) + generated


setup(cmdclass={"build_py": BuildPyWithStubs})
