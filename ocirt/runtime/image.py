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
                      checked_by: Any) -> str:
    """The bundle for `run --image`: made under the state root, verified first."""
    from ocirt.sif.bundle import BundleOptions, create_bundle
    from ocirt.state import validate_id

    if not is_sif(image):
        raise OcirtError(f"{image}: not a SIF image")
    directory = bundle_dir(store, validate_id(cid))
    if os.path.exists(os.path.join(directory, "config.json")):
        raise OcirtError("container with given ID already exists")
    os.makedirs(os.path.dirname(directory), 0o700, exist_ok=True)
    create_bundle(image, directory, BundleOptions(args=list(args), policy=checked_by))
    return directory


def mount_root(plan: Plan, state_dir: str) -> dict[str, Any]:
    """`root.path` is a SIF image: verify it, mount its root partition read-only at
    STATE/rootfs and make that the plan's rootfs. Returns the record `release` takes."""
    from ocirt.sif.image import Image
    from ocirt.sif.mount import mount_image
    from ocirt.sif.policy import verify_image

    image_path = plan.rootfs
    target = os.path.join(state_dir, "rootfs")
    os.mkdir(target, 0o755)
    with Image.open(image_path) as opened:
        checked_by = policy([], [])
        if checked_by is not None:
            verify_image(opened, checked_by)
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
