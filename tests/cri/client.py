"""A CRI client for the tests: the Python message and stub modules are generated from
tests/cri/cri.proto with grpc_tools.protoc into a scratch directory when a test session
first needs them (nothing generated is kept in the repository), and calls go over
containerd's gRPC socket as kubelet's do."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from types import ModuleType
from typing import Any

try:
    import grpc
except ImportError:  # reported by generate(): a missing grpcio must not break collection
    grpc = None

PROTO_DIR = os.path.dirname(os.path.abspath(__file__))
PROTO = "cri.proto"


def generate(out_dir: str) -> tuple[ModuleType, ModuleType]:
    """Compile cri.proto into `out_dir` and import the messages and the stubs."""
    if grpc is None:
        raise RuntimeError("grpcio is not installed: apt-get install python3-grpcio "
                           "python3-grpc-tools")
    r = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}",
                        f"--python_out={out_dir}", f"--grpc_python_out={out_dir}", PROTO],
                       capture_output=True, text=True, cwd=PROTO_DIR, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"grpc_tools.protoc failed: {r.stderr.strip()}")
    sys.path.insert(0, out_dir)
    try:
        # The generated stubs import the messages by their top-level name.
        return importlib.import_module("cri_pb2"), importlib.import_module("cri_pb2_grpc")
    finally:
        sys.path.remove(out_dir)


class Cri:
    """The runtime and image services of one CRI endpoint. `pb` holds the message
    classes; runtime calls are `cri.rt.Method(request)`, image calls `cri.img...`."""

    def __init__(self, socket: str, pb: ModuleType, stubs: ModuleType) -> None:
        self.pb = pb
        self.channel = grpc.insecure_channel(f"unix://{socket}")
        self.rt = stubs.RuntimeServiceStub(self.channel)
        self.img = stubs.ImageServiceStub(self.channel)

    def wait_ready(self, timeout: float, alive: Any) -> Any:
        """Poll Version until the endpoint answers (containerd loads its plugins before it
        serves); `alive()` says whether the daemon is still running."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.rt.Version(self.pb.VersionRequest(version="v1"), timeout=2)
            except grpc.RpcError:
                if not alive() or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def close(self) -> None:
        self.channel.close()
