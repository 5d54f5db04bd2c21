"""The images the CRI tests run, built from busybox-static: an application image and a
pause image (busybox `sleep` as the pod's sandbox process), both with the one busybox
layer, packed as one OCI image archive for `ctr images import`."""

from __future__ import annotations

import os
import platform
import subprocess
import tomllib

from tests.ocilayout import TAR, Layout, rootfs_tar

APP = "localhost/ocirt-cri/busybox:1"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def default_sandbox_image() -> str:
    """The pause image containerd's CRI plugin uses unless configured otherwise. The
    tests import their own pause image under this name, so that the configuration under
    test stays exactly what a user writes, and nothing is ever pulled."""
    out = subprocess.run(["containerd", "config", "default"], capture_output=True,
                         check=True, timeout=60).stdout
    return tomllib.loads(out.decode())["plugins"]["io.containerd.grpc.v1.cri"]["sandbox_image"]


# Image-spec architecture names for the machines tests run on.
ARCH = {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64le", "s390x": "s390x"}


def _config(entrypoint: list[str], cmd: list[str]) -> dict:
    return {"architecture": ARCH.get(platform.machine(), platform.machine()), "os": "linux",
            "config": {"Env": [f"PATH={PATH}"], "Entrypoint": entrypoint, "Cmd": cmd,
                       "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": []}}


def build_archive(rootfs: str, directory: str, pause: str) -> str:
    """An OCI archive holding APP and the pause image named `pause`."""
    layout = Layout(os.path.join(directory, "layout"))
    layer = layout.blob(rootfs_tar(rootfs), TAR)
    for name, config in ((APP, _config([], ["sh"])),
                         (pause, _config(["/bin/sleep"], ["2147483647"]))):
        # An uncompressed layer's diff ID is its digest.
        config["rootfs"]["diff_ids"] = [layer["digest"]]
        layout.image([layer], config, ref=name.rsplit(":", 1)[1],
                     annotations={"io.containerd.image.name": name})
    return layout.archive(os.path.join(directory, "images.tar"))
