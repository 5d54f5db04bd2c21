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


def bundle_from_image(store: Store, cid: str, image: str, args: list[str],
                      checked_by: Any, writable: str | None = None) -> str:
    """The bundle for `run --image`: made under the state root, verified first;
    `writable` "tmpfs" stacks a throw-away writable layer on the image (--writable-tmpfs)."""
    from ocirt.sif.bundle import BundleOptions, create_bundle
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
    create_bundle(image, directory, BundleOptions(args=list(args), policy=checked_by,
                                                  writable=writable))
    return directory


def _creator_file(directory: str) -> str:
    return directory + ".creator"


def mark_creator(directory: str) -> None:
    """Record, before the bundle exists, which process makes it: `delete --force` removes
    the bundle of a `create --image` killed before the container's state named it, and
    never one whose maker still runs."""
    from ocirt import jsonio
    from ocirt.linux import proc
    from ocirt.state import write_atomic

    me = os.getpid()
    write_atomic(_creator_file(directory), jsonio.dumps([me, proc.start_time(me)]).encode())


def unmark_creator(directory: str) -> None:
    """The container's state names the bundle now (or it is gone): the mark is done."""
    try:
        os.unlink(_creator_file(directory))
    except FileNotFoundError:
        pass


def remove_orphan_bundle(store: Store, cid: str) -> None:
    """The bundle of a `create --image CID` that was killed before it recorded it in
    the container's state: whatever is mounted below it is detached, then it goes."""
    from ocirt import jsonio
    from ocirt.linux import proc

    directory = bundle_dir(store, cid)
    try:
        with open(_creator_file(directory), "rb") as f:
            creator = jsonio.loads(f.read())
    except (OSError, ValueError):
        return  # not made by a create that died (or made before the marks existed)
    if proc.is_running(int(creator[0]), creator[1]):
        return  # still being made
    from ocirt.runtime.create import host_mounts_below, unmount_host_mounts
    from ocirt.sif.mount import remove_tree

    unmount_host_mounts(host_mounts_below(os.path.realpath(directory)))
    if os.path.lexists(directory):
        remove_tree(directory)
    unmark_creator(directory)


def mount_root(plan: Plan, state_dir: str, checked_by: Any = None) -> dict[str, Any]:
    """`root.path` is a SIF image: verify it (against `checked_by`, from `policy`), mount
    its root partition read-only at STATE/rootfs and make that the plan's rootfs.
    Returns the record `release` takes."""
    from ocirt.sif.image import Image
    from ocirt.sif.mount import mount_image
    from ocirt.sif.policy import verify_image

    image_path = plan.rootfs
    target = os.path.join(state_dir, "rootfs")
    os.mkdir(target, 0o755)
    with Image.open(image_path) as opened:
        if checked_by is not None:
            verify_image(opened, checked_by)
        warn_unverified(image_path, checked_by)
        record = mount_image(image_path, target, os.path.join(state_dir, "sif-work"),
                             image=opened)
    plan.rootfs = target
    plan.readonly = True  # a SIF partition is read-only: say so, not fail on a write
    return record.to_json()


def release(data: dict[str, Any]) -> None:
    """Undo what `mount_root` or `bundle_from_image` did for a container."""
    if data.get("sif_mount"):
        from ocirt.sif.mount import MountRecord
        from ocirt.sif.mount import release as release_mount

        release_mount(MountRecord.from_json(data["sif_mount"]))
    if data.get("sif_bundle"):
        remove_bundle(data["sif_bundle"])


def remove_bundle(directory: str) -> None:
    from ocirt.sif.bundle import remove_bundle as remove

    if os.path.exists(directory):
        remove(directory)
    unmark_creator(directory)
