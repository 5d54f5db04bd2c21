"""containerd's checkpoint through its runc shim (io.containerd.runc.v2) with ocirt as
the shim's runtime binary: `ctr task checkpoint` pauses the task, has the shim call
`ocirt checkpoint --image-path I --work-path W [--leave-running] ID`, resumes it, and
stores CRIU's images as a checkpoint image in containerd's content store. A wrapper of
the ocirt binary records every call the shim makes, so the test sees the runc call
pattern as well as its effect: the counting container goes on counting after a
checkpoint that leaves it running, and stops after `--exit`.

Runs where CRIU works and containerd is installed (the test-host guest).
"""

from __future__ import annotations

import os
import shutil
import time

import pytest

from conformance.runner import wait_for
from tests.checkpoint.helpers import COUNTER, needs_criu
from tests.checkpoint.helpers import numbers as _numbers
from tests.engines.test_containerd_systemd_host import ctr  # noqa: F401 (the fixture)

SH_COUNTER = ["/bin/sh", *COUNTER[1:]]  # a --rootfs container's spec has no PATH
pytestmark = [pytest.mark.root, needs_criu,
              pytest.mark.skipif(shutil.which("containerd") is None, reason="no containerd")]


@pytest.fixture
def logged_ocirt(tmp_path, ocirt_bin):
    """A wrapper of ocirt that appends each argv it is called with to a log."""
    log = tmp_path / "calls.log"
    wrapper = tmp_path / "ocirt-wrapper"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >>{log}\nexec {ocirt_bin} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper), log


def _start(ctr, bundle, tmp_path, binary: str, name: str) -> str:  # noqa: F811
    rootfs = os.path.join(bundle(["true"]), "rootfs")
    out = tmp_path / f"out-{name}"
    out.mkdir()
    # fifos for stdio (no --null-io): the init's stdio are the shim's pipes, which CRIU
    # dumps, where the host's /dev/null would be a file outside the container
    r = ctr("run", "--detach", "--rootfs", "--runc-binary", binary,
            "--mount", f"type=bind,src={out},dst=/out,options=rbind:rw",
            rootfs, name, *SH_COUNTER)
    assert r.returncode == 0, r.stderr
    count = str(out / "count")
    assert wait_for(lambda: len(_numbers(count)) >= 5, timeout=60), _numbers(count)
    return count


def _calls(log, verb: str) -> list[list[str]]:
    return [line.split() for line in log.read_text().splitlines() if f" {verb} " in line]


def test_ctr_task_checkpoint_leaves_it_counting(ctr, bundle, tmp_path,  # noqa: F811
                                                logged_ocirt):
    binary, log = logged_ocirt
    name = f"ckpt-{os.getpid()}"
    count = _start(ctr, bundle, tmp_path, binary, name)
    r = ctr("tasks", "checkpoint", name)
    assert r.returncode == 0, (r.stdout, r.stderr, log.read_text())
    print("ctr tasks checkpoint:", r.stdout.strip())
    print("calls:", log.read_text())
    (call,) = _calls(log, "checkpoint")
    assert "--leave-running" in call and "--image-path" in call and "--work-path" in call
    assert _calls(log, "pause") and _calls(log, "resume"), log.read_text()
    images = ctr("images", "list").stdout
    print("images:", images)
    assert "checkpoint" in images, images
    before = len(_numbers(count))
    assert wait_for(lambda: len(_numbers(count)) >= before + 5, timeout=60), "stopped"
    assert " RUNNING" in ctr("tasks", "list").stdout


def test_ctr_task_checkpoint_exit_stops_it(ctr, bundle, tmp_path, logged_ocirt):  # noqa: F811
    binary, log = logged_ocirt
    name = f"ckptx-{os.getpid()}"
    count = _start(ctr, bundle, tmp_path, binary, name)
    r = ctr("tasks", "checkpoint", "--exit", name)
    assert r.returncode == 0, (r.stdout, r.stderr, log.read_text())
    print("calls:", log.read_text())
    (call,) = _calls(log, "checkpoint")
    assert "--leave-running" not in call
    assert wait_for(lambda: "RUNNING" not in ctr("tasks", "list").stdout, timeout=60)
    stopped_at = len(_numbers(count))
    time.sleep(1)
    assert len(_numbers(count)) == stopped_at
    assert "checkpoint" in ctr("images", "list").stdout
    # what this ctr offers to bring it back (a container-level restore needs an image)
    for args in (("containers", "restore", "--help"), ("run", "--help"),
                 ("tasks", "start", "--help")):
        print(args, ctr(*args).stdout[-1500:])


IMAGE = "docker.io/library/ocirt-counter:1"


def _oci_archive(rootfs: str, path: str) -> None:
    """An OCI image archive of one layer, the busybox rootfs (the guest has no network,
    and a container-level restore needs the container to come from an image)."""
    import hashlib
    import io
    import json
    import platform
    import tarfile

    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as t:
        t.add(rootfs, arcname=".")
    blobs: dict[str, bytes] = {}

    def blob(data: bytes, media: str) -> dict:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"mediaType": media, "digest": digest, "size": len(data)}

    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    lay = blob(layer.getvalue(), "application/vnd.oci.image.layer.v1.tar")
    config = blob(json.dumps({"architecture": arch, "os": "linux", "config": {
        "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]}, "rootfs": {
        "type": "layers", "diff_ids": [lay["digest"]]}}).encode(),
        "application/vnd.oci.image.config.v1+json")
    manifest = blob(json.dumps({"schemaVersion": 2, "mediaType":
                                "application/vnd.oci.image.manifest.v1+json",
                                "config": config, "layers": [lay]}).encode(),
                    "application/vnd.oci.image.manifest.v1+json")
    manifest["annotations"] = {"io.containerd.image.name": IMAGE,
                               "org.opencontainers.image.ref.name": "1"}
    with tarfile.open(path, "w") as t:
        for name, data in [("oci-layout", b'{"imageLayoutVersion": "1.0.0"}'),
                           ("index.json", json.dumps({"schemaVersion": 2,
                                                      "manifests": [manifest]}).encode()),
                           *((f"blobs/sha256/{d[7:]}", v) for d, v in blobs.items())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


def test_ctr_container_checkpoint_and_restore(ctr, bundle, tmp_path,  # noqa: F811
                                              logged_ocirt):
    """`ctr containers checkpoint --task`, the container deleted, `ctr containers restore
    --live`: the shim creates the task from the checkpoint (`ocirt restore --detach
    -no-subreaper --pid-file ... --image-path ... --bundle ...`) and it counts on."""
    binary, log = logged_ocirt
    archive = str(tmp_path / "image.tar")
    _oci_archive(os.path.join(bundle(["true"]), "rootfs"), archive)
    r = ctr("images", "import", archive)
    assert r.returncode == 0, r.stderr
    name = f"ckptc-{os.getpid()}"
    out = tmp_path / "out-c"
    out.mkdir()
    r = ctr("run", "--detach", "--runc-binary", binary,
            "--mount", f"type=bind,src={out},dst=/out,options=rbind:rw",
            IMAGE, name, *SH_COUNTER)
    assert r.returncode == 0, r.stderr
    count = str(out / "count")
    assert wait_for(lambda: len(_numbers(count)) >= 5, timeout=60), _numbers(count)
    r = ctr("containers", "checkpoint", "--task", name, "ocirt/checkpoint:1")
    assert r.returncode == 0, (r.stdout, r.stderr, log.read_text())
    for args in (("tasks", "kill", "--signal", "SIGKILL", name),):
        ctr(*args)
    assert wait_for(lambda: "RUNNING" not in ctr("tasks", "list").stdout, timeout=60)
    stopped_at = max(_numbers(count))
    assert ctr("tasks", "delete", name).returncode == 0
    assert ctr("containers", "delete", name).returncode == 0
    r = ctr("containers", "restore", "--live", name, "ocirt/checkpoint:1")
    print("restore:", r.returncode, r.stdout, r.stderr, log.read_text())
    assert r.returncode == 0, (r.stdout, r.stderr, log.read_text())
    (call,) = _calls(log, "restore")
    assert "--image-path" in call and "--detach" in call, call
    assert wait_for(lambda: len([n for n in _numbers(count) if n > stopped_at]) >= 3,
                    timeout=60), _numbers(count)[-5:]
    assert min(n for n in _numbers(count) if n > stopped_at) == stopped_at + 1
    assert " RUNNING" in ctr("tasks", "list").stdout
