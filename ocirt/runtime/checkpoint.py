"""`checkpoint`: dump a running container with CRIU, as runc does.

The container's bind mounts are external to CRIU (named by destination, re-bound from
the bundle's sources at restore), the network namespace is left empty, the init's stdio
is written to descriptors.json, the cgroup freezer stops the tasks. Without
--leave-running (or --pre-dump) the dumped tasks are gone and the container is destroyed
as runc destroys it; a failed dump leaves it running as it was (CRIU resumes the tasks),
and the images directory holds only CRIU's log.
"""

from __future__ import annotations

import os

from ocirt import jsonio, log
from ocirt.errors import OcirtError
from ocirt.runtime import criu
from ocirt.state import CREATED, STOPPED, Container, Store

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from typing import Any


def checkpoint(store: Store, cid: str, opts: criu.CriuOptions, sif: str = "",
               sign_keys: list[str] | None = None) -> Container:
    """Dump container `cid` into opts.images(), and with `sif` into a checkpoint group of
    that SIF image (signed with `sign_keys`); returns its state as it was."""
    opts.check()
    signers = _sif_signers(sif, sign_keys or [], opts)
    with store.lock(cid):
        container = store.load(cid)
        status = container.status()
        if status in (CREATED, STOPPED) or container.data.get("creating"):
            raise OcirtError(f"Container cannot be checkpointed in {status} state")
        binary = criu.find(opts.binary)
        if opts.lazy_pages:
            criu.check_lazy_pages(binary)
        scratch = ""
        if sif and not opts.image_path:  # the images only pass through on their way in
            scratch = opts.image_path = _scratch_dir(store, cid)
        images = opts.images()
        made = _make_dir(images)
        try:
            dump(binary, container, opts)
        except BaseException:
            _remove_ours(images, made)
            if scratch:
                _remove_tree(scratch)
            raise
        config = _read(container.path("config.json"))
        if not (opts.leave_running or opts.pre_dump):
            from ocirt.runtime.delete import destroy

            try:
                destroy(store, container)
            except OcirtError as exc:
                log.warning(f"checkpoint: destroy the dumped container: {exc}")
        if sif:
            _into_sif(sif, images, config, container, signers, scratch)
        return container


def _sif_signers(sif: str, keys: list[str], opts: criu.CriuOptions) -> list[Any]:
    """Checked before the dump: the SIF is one, and the signing keys load."""
    if not sif:
        if keys:
            raise OcirtError("--sign-key needs --sif")
        return []
    if opts.pre_dump:
        raise OcirtError("--sif and --pre-dump exclude each other (a pre-dump is no "
                         "checkpoint to restore)")
    from ocirt.sif.image import Image

    with Image.open(sif, writable=True):
        pass
    if not keys:
        return []
    from ocirt.sif import integrity
    from ocirt.sif import keys as keymod

    return [integrity.DSSESigner([keymod.load_private(p) for p in keys])]


def _into_sif(sif: str, images: str, config: bytes, container: Container,
              signers: list[Any], scratch: str) -> None:
    from ocirt.sif import checkpoint as sifcp

    try:
        group = sifcp.store(sif, images, config, container.id,
                            str(container.data.get("created", "")), signers)
    except OcirtError as exc:
        # the container is gone: its checkpoint must not go with the failure
        raise OcirtError(f"checkpoint into {sif}: {exc.message}; the checkpoint stays in "
                         f"{images}") from None
    log.debug(f"checkpoint of {container.id} added to {sif} as group {group}")
    if scratch:
        _remove_tree(scratch)


def _scratch_dir(store: Store, cid: str) -> str:
    import tempfile

    top = store.private_dir("checkpoint")
    os.makedirs(top, 0o700, exist_ok=True)
    return tempfile.mkdtemp(prefix=cid + "-", dir=top)


def _remove_tree(path: str) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def dump(binary: str, container: Container, opts: criu.CriuOptions) -> None:
    """Run `criu dump` (or `pre-dump`) on the container's init."""
    plan = container_plan(container)
    images = opts.images()
    args = ["-t", str(container.pid), *opts.common_args()]
    if opts.work_path:
        _make_dir(opts.work())
    if opts.parent_path:
        parent = os.path.join(images, opts.parent_path)
        if not os.path.isdir(parent):
            raise OcirtError(f"invalid --parent-path: {parent}: no such directory")
        args += ["--prev-images-dir", opts.parent_path, "--track-mem"]
    freezer = _freezer(container)
    if freezer:
        args += ["--freeze-cgroup", freezer]
    args += opts.dump_args()
    if opts.pre_dump:
        args.append("--track-mem")
        action = "pre-dump"
    else:
        action = "dump"
        args += ["--root", plan.rootfs]
        if opts.leave_running:
            args.append("--leave-running")
        for dest in criu.ext_mounts(plan):
            args += ["--external", f"mnt[{dest}]:{dest}"]
        args += _external_namespaces(container, plan)
        _write(os.path.join(images, criu.DESCRIPTORS), jsonio.dumps(
            criu.descriptors(container.pid)).encode())
    # a terminal's master is outside the container: only CRIU's RPC dumps its slave
    # alone (orphan_pts_master), for restore to make a new pair
    keep = (opts.status_fd,) if opts.lazy_pages and opts.status_fd != -1 else ()
    criu.run(binary, action, args, opts.work(), f"{action.replace('-', '')}.log",
             pass_fds=keep, rpc=plan.process.terminal)


def container_plan(container: Container) -> Any:
    """The plan of the container's config snapshot (its mounts, rootfs, namespaces)."""
    from ocirt.spec.plan import build_plan

    plan = build_plan(container.config(), container.bundle)
    if container.data.get("rootfs"):
        plan.rootfs = container.data["rootfs"]
    return plan


def _external_namespaces(container: Container, plan: Any) -> list[str]:
    """A network or pid namespace the container joined (a path in its config) is not
    CRIU's to dump: it is named external, and restore joins the same path again."""
    from ocirt.linux import proc

    out = []
    for kind, short, key in (("network", "net", "extRootNetNS"), ("pid", "pid",
                                                                  "extRootPidNS")):
        if plan.namespaces.get(kind):
            link = proc.ns_inode(container.pid, short) or ""
            inode = link.rpartition("[")[2].rstrip("]")
            if inode.isdigit():
                out += ["--external", f"{short}[{inode}]:{key}"]
    return out


def _freezer(container: Container) -> str:
    from ocirt.cgroups import manager_from_state

    paths = manager_from_state(container.data.get("cgroup")).paths()
    return paths.get("freezer") or paths.get("") or ""


def _make_dir(path: str) -> bool:
    """mkdir -p; True when the last component was made here."""
    if os.path.isdir(path):
        return False
    try:
        os.makedirs(path, 0o700)
    except OSError as exc:
        raise OcirtError(f"create {path}: {os.strerror(exc.errno or 0)}") from None
    return True


def _remove_ours(images: str, made: bool) -> None:
    """After a failed dump: our descriptors.json goes, and in an images directory made
    for this dump the partial images go too. CRIU's log stays: it says what failed."""
    names = os.listdir(images) if made else [criu.DESCRIPTORS]
    for name in names:
        if name.endswith(".log"):
            continue
        try:
            os.unlink(os.path.join(images, name))
        except OSError:
            pass


def _write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
