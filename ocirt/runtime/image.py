"""Containers straight from SIF images, verified, mounted for the container's lifetime.

Two ways in, both going through the same verification policy (trusted keys from
/etc/ocirt/sif-policy.json, plus any given on the command line):

* `ocirt run|create --image IMAGE.sif ID [-- ARGS]`: the bundle (config.json from the
  image's metadata, rootfs mounted in place) is made under the state root and belongs
  to the container: `delete` unmounts and removes it.
* A config.json whose `root.path` names a .sif file: its root partition is mounted
  read-only under the container's state directory and used as the rootfs, released on
  `delete`.

A policy that requires signatures makes `create` refuse an unsigned or tampered image
with the reason (the seed's "trusted containers"). The image is opened once: what was
verified is what gets mounted.
"""

from __future__ import annotations

import os

from ocirt.errors import OcirtError

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ocirt.spec.plan import Plan
    from ocirt.state import Store

SIF_MAGIC = b"SIF_MAGIC"


def policy(keys: list[str], pgp_keys: list[str]) -> Any:
    """The system policy (if any) plus keys from the command line; None: no checking."""
    from ocirt.sif.policy import Policy, load_policy

    base = load_policy()
    if keys or pgp_keys:
        return (base or Policy()).with_keys(keys, pgp_keys)
    return base


def warn_unverified(image: str, checked_by: Any) -> None:
    """An image about to run without verification gets one warning line, unless a
    policy said so (`"require": false` in the system policy is the admin's choice)."""
    if checked_by is not None:
        return
    from ocirt import log
    from ocirt.sif.policy import DEFAULT_POLICY_PATH

    log.warning(f"{image}: running an unverified SIF image (no --key given and no "
                f"{DEFAULT_POLICY_PATH}); its signatures were not checked")


def is_sif(path: str) -> bool:
    """A regular file with SIF's magic (at offset 32, after the launch script). A FIFO,
    socket or device is refused here, before anything could block on opening it."""
    from ocirt.linux.files import NotRegularFile, open_regular

    if os.path.isdir(path):
        return False
    try:
        fd = open_regular(path)
    except NotRegularFile as exc:
        raise OcirtError(f"{path}: {exc}") from None
    except OSError:
        return False
    try:
        head = os.pread(fd, 48, 0)
    except OSError:
        return False
    finally:
        os.close(fd)
    return head[32:41] == SIF_MAGIC


def bundle_dir(store: Store, cid: str) -> str:
    return os.path.join(store.private_dir("sif-bundles"), cid)


def images_dir(store: Store) -> str:
    """Where the shared image mounts of this state root live (ocirt.runtime.sharedroot)."""
    from ocirt.runtime.sharedroot import IMAGES

    return store.private_dir(IMAGES)


def bundle_from_image(store: Store, cid: str, image: str, args: list[str],
                      checked_by: Any, writable: str | None = None
                      ) -> tuple[str, dict[str, Any] | None]:
    """The bundle for `run --image`, made under the state root: its root is the image's
    shared mount (verified once per image), and with `writable` "tmpfs" a throw-away
    writable layer of its own on top (--writable-tmpfs). Returns the bundle and the
    lease (None when the image had to be mounted for this container alone)."""
    from ocirt.state import make_private_dirs, validate_id

    if not is_sif(image):
        raise OcirtError(f"{image}: not a SIF image")
    directory = bundle_dir(store, validate_id(cid))
    if os.path.exists(os.path.join(directory, "config.json")):
        raise OcirtError("container with given ID already exists")
    make_private_dirs(os.path.dirname(directory))
    remove_orphan_bundle(store, cid)  # of an earlier `create --image` killed midway
    if os.path.exists(_creator_file(directory)):
        raise OcirtError("container with given ID already exists")  # being made now
    warn_unverified(image, checked_by)
    mark_creator(directory)
    try:
        return _bundle_from_open(store, cid, directory, image, args, checked_by, writable)
    except BaseException:
        unmark_creator(directory)  # nothing of it is left (its steps undid themselves)
        raise


def _bundle_from_open(store: Store, cid: str, directory: str, image: str, args: list[str],
                      checked_by: Any, writable: str | None
                      ) -> tuple[str, dict[str, Any] | None]:
    from ocirt.sif.bundle import BundleOptions, create_bundle_from
    from ocirt.sif.image import Image

    with Image.open(os.path.abspath(image)) as opened:  # once: what is verified is used
        lease = _lease(store, opened, cid, checked_by,
                       lambda planned: mark_creator(directory, planned))
        if lease is None:
            if checked_by is not None:
                from ocirt.sif.policy import verify_image

                verify_image(opened, checked_by)
            create_bundle_from(opened, directory,
                               BundleOptions(args=list(args), writable=writable))
            return directory, None
        try:
            create_bundle_from(opened, directory, BundleOptions(
                args=list(args), writable=writable, lowers=lease.lowers))
        except BaseException:
            _release_lease(lease)
            raise
    return directory, lease.to_json()


def _lease(store: Store, opened: Any, cid: str, checked_by: Any,
           record: Callable[[dict[str, Any] | None], None]) -> Any:
    """A lease on the image's shared mount, or None where it cannot be shared here.
    `record` is given the lease before it is taken (so that `delete --force` after a
    SIGKILL at any instant gives it back), and None when it was not taken."""
    from ocirt import log
    from ocirt.runtime import sharedroot

    directory = images_dir(store)
    record(sharedroot.planned(directory, opened, cid).to_json())
    try:
        lease = sharedroot.acquire(directory, opened, cid, checked_by)
    except sharedroot.NotShared as exc:
        log.debug(f"{opened.path}: {exc.message}; mounted for {cid} alone")
        record(None)
        return None
    except BaseException:
        record(None)  # acquire took nothing
        raise
    return lease


def _release_lease(lease: Any) -> None:
    from ocirt.runtime import sharedroot

    sharedroot.release(lease)


def _creator_file(directory: str) -> str:
    return directory + ".creator"


def mark_creator(directory: str, lease: dict[str, Any] | None = None) -> None:
    """Record, before the bundle exists, which process makes it (and, before it is taken,
    its lease on the image's shared mount): `delete --force` removes the bundle of a
    `create --image` killed before the container's state named it, and gives the lease
    back, and never touches one whose maker still runs."""
    from ocirt import jsonio
    from ocirt.linux import proc
    from ocirt.state import write_atomic

    me = os.getpid()
    mark: list[Any] = [me, proc.start_time(me)]
    if lease:
        mark.append(lease)
    write_atomic(_creator_file(directory), jsonio.dumps(mark).encode())


def unmark_creator(directory: str) -> None:
    """The container's state names the bundle now (or it is gone): the mark is done."""
    try:
        os.unlink(_creator_file(directory))
    except FileNotFoundError:
        pass


def remove_orphan_bundle(store: Store, cid: str) -> None:
    """The bundle of a `create --image CID` that was killed before it recorded it in
    the container's state: whatever is mounted below it is detached, then it goes (its
    lease on a shared image mount is then stale: ocirt.runtime.sharedroot drops it)."""
    from ocirt import jsonio
    from ocirt.linux import proc

    directory = bundle_dir(store, cid)
    _remove_dead_partial_marks(directory)
    try:
        with open(_creator_file(directory), "rb") as f:
            creator = jsonio.loads(f.read())
    except (OSError, ValueError):
        return  # not made by a create that died (or made before the marks existed)
    if proc.is_running(int(creator[0]), creator[1]):
        return  # still being made
    from ocirt.runtime.hostmounts import host_mounts_below, unmount_host_mounts
    from ocirt.sif.mount import remove_tree

    unmount_host_mounts(host_mounts_below(os.path.realpath(directory)))
    if os.path.lexists(directory):
        remove_tree(directory)
    if len(creator) > 2 and not os.path.lexists(store.dir(cid)):
        # its lease, maybe taken (a container of that ID, made since, holds its own)
        release({"sif_lease": creator[2]}, store)
    unmark_creator(directory)


def _remove_dead_partial_marks(directory: str) -> None:
    """A creator mark's temporary file (ocirt.state.write_atomic's `MARK.PID.tmp`) that
    its writer, killed between write and rename, never renamed: it names no bundle, so
    it only has to go, once that writer is gone."""
    from ocirt.linux import proc

    parent, prefix = os.path.split(_creator_file(directory) + ".")
    try:
        names = [n for n in os.listdir(parent) if n.startswith(prefix) and n.endswith(".tmp")]
    except FileNotFoundError:
        return
    for name in names:
        pid = name[len(prefix):-len(".tmp")]
        if pid.isdigit() and not proc.is_running(int(pid), None):
            try:
                os.unlink(os.path.join(parent, name))
            except FileNotFoundError:
                pass


def mount_root(plan: Plan, state_dir: str, checked_by: Any = None,
               store: Store | None = None, cid: str = "",
               record: Callable[[dict[str, Any] | None], None] | None = None
               ) -> dict[str, Any]:
    """`root.path` is a SIF image: verify it (against `checked_by`, from `policy`) and
    make its root the plan's rootfs: the image's shared mount when `store` and `record`
    are given (one per image and state root; `record` saves the lease in the container's
    state before it is taken), else a mount of its own at STATE/rootfs. Returns the
    state entries (`sif_mount`, `sif_lease`) that `release` takes."""
    from ocirt.sif.image import Image

    warn_unverified(plan.rootfs, checked_by)
    with Image.open(plan.rootfs) as opened:
        lease = None
        if store is not None and record is not None:
            lease = _lease(store, opened, cid, checked_by, record)
        if lease is None:
            out = {"sif_mount": _mount_alone(plan, state_dir, opened, checked_by)}
    if lease is not None:
        try:
            out = _over_lease(plan, state_dir, lease)
        except BaseException:
            _release_lease(lease)
            raise
    plan.readonly = True  # a SIF partition is read-only: say so, not fail on a write
    return out


def _mount_alone(plan: Plan, state_dir: str, opened: Any, checked_by: Any) -> dict[str, Any]:
    from ocirt.sif.mount import mount_image
    from ocirt.sif.policy import verify_image

    target = os.path.join(state_dir, "rootfs")
    os.mkdir(target, 0o755)
    if checked_by is not None:
        verify_image(opened, checked_by)
    record = mount_image(plan.rootfs, target, os.path.join(state_dir, "sif-work"),
                         image=opened)
    plan.rootfs = target
    return record.to_json()


def _over_lease(plan: Plan, state_dir: str, lease: Any) -> dict[str, Any]:
    """The shared layer itself as the root, or a read-only overlay of the layers."""
    out: dict[str, Any] = {"sif_lease": lease.to_json()}
    if len(lease.lowers) == 1:
        plan.rootfs = lease.lowers[0]
        return out
    from ocirt.sif.mount import mount_over

    target = os.path.join(state_dir, "rootfs")
    os.mkdir(target, 0o755)
    out["sif_mount"] = mount_over(lease.lowers, target,
                                  os.path.join(state_dir, "sif-work")).to_json()
    plan.rootfs = target
    return out


def release(data: dict[str, Any], store: Store | None = None) -> None:
    """Undo what `mount_root` or `bundle_from_image` did for a container: its own
    mounts first, then its lease on the image's shared mount (only one of this state
    root's: a state file names it)."""
    if data.get("sif_mount"):
        from ocirt.sif.mount import MountRecord
        from ocirt.sif.mount import release as release_mount

        release_mount(MountRecord.from_json(data["sif_mount"]))
    if data.get("sif_bundle"):
        remove_bundle(data["sif_bundle"])
    if data.get("sif_lease"):
        from ocirt.runtime.sharedroot import Lease

        lease = Lease.from_json(data["sif_lease"])
        if store is not None and os.path.realpath(lease.directory) != \
                os.path.realpath(images_dir(store)):
            raise OcirtError(f"shared image lease {lease.directory}: not this state root's")
        _release_lease(lease)


def remove_bundle(directory: str) -> None:
    from ocirt.sif.bundle import remove_bundle as remove

    if os.path.exists(directory):
        remove(directory)
    unmark_creator(directory)
