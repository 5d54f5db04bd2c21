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
    import stat

    from ocirt.linux.files import NotRegularFile, open_regular

    try:
        fd = open_regular(path)
    except NotRegularFile as exc:
        if stat.S_ISDIR(exc.mode):
            return False
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
    lease (None when the image had to be mounted for this container alone).

    A later container of an image that is mounted, verified and made a bundle of
    already takes `_bundle_from_cache`: a stat of the file (its identity), none of the
    image code, no read of it (every request counts on slow shared storage)."""
    cached = _cached_identity(store, os.path.abspath(image), args, writable)
    first = None
    if cached is not None and not cached.hit:
        cached, first = _wait_for_first(store, cached)
    try:
        return _bundle(store, cid, image, args, checked_by, writable, cached)
    finally:
        if first is not None:
            first.done()


def _wait_for_first(store: Store, cached: _Cached) -> tuple[_Cached | None, Any]:
    """Wait while another container mounts the image and makes its first bundle (a
    crowd of them started at once), then take its cache: (the identity with the cache
    entry, None). When the image is not mounted here, this container is the first:
    (None, the FirstTake it holds until its bundle is made)."""
    from ocirt.runtime import sharedroot

    images = images_dir(store)
    first = sharedroot.FirstTake(images, cached.ident)
    if sharedroot.has_cache(images, cached.ident, cached.name):
        first.done()
        cached.hit = True
        return cached, None
    if not first.maker or first.is_mounted():  # (the first failed, or made no entry
        first.done()                           # of this kind): made the full way
        return None, None
    return None, first


def _bundle(store: Store, cid: str, image: str, args: list[str], checked_by: Any,
            writable: str | None, cached: _Cached | None
            ) -> tuple[str, dict[str, Any] | None]:
    from ocirt.state import make_private_dirs, validate_id

    if cached is None:
        _check_sif(image)
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
        if cached is not None:
            made = _bundle_from_cache(store, cid, directory, cached, args, checked_by)
            if made is not None:
                return made
            _check_sif(image)  # (its mount went, or it was not verified by this policy)
        return _bundle_from_open(store, cid, directory, image, args, checked_by, writable)
    except BaseException:
        unmark_creator(directory)  # nothing of it is left (its steps undid themselves)
        raise


def _check_sif(image: str) -> None:
    if not is_sif(image):
        raise OcirtError(f"{image}: not a SIF image")


def _cache_name(path: str, args: list[str], writable: str | None) -> str | None:
    """The shared mount's cache entry for bundles of the image at `path` (the config
    names it) with or without arguments; None where bundles are not cached (a writable
    root mounts an overlay of its own)."""
    if writable is not None:
        return None
    from ocirt import __version__
    from ocirt.runtime.sharedroot import cache_name

    return cache_name("bundle", __version__, path, "args" if args else "no-args")


class _Cached:
    """An image file's identity, the name of the cache entry for its bundles, and
    whether its shared mount has that entry (`hit`)."""

    __slots__ = ("ident", "name", "path", "hit")

    def __init__(self, ident: dict[str, Any], name: str, path: str, hit: bool) -> None:
        self.ident, self.name, self.path, self.hit = ident, name, path, hit


def _cached_identity(store: Store, path: str, args: list[str],
                     writable: str | None) -> _Cached | None:
    """The identity of the regular file at `path`, for bundles that can be cached (None
    otherwise, or when it is no regular file): one stat, nothing is opened, so no FIFO
    or device can block or act here."""
    import stat

    name = _cache_name(path, args, writable)
    if name is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    from ocirt.runtime import sharedroot

    ident = sharedroot.identity_of(st, sharedroot.use_fuse())
    return _Cached(ident, name, path, sharedroot.has_cache(images_dir(store), ident, name))


def _bundle_from_cache(store: Store, cid: str, directory: str, cached: _Cached,
                       args: list[str], checked_by: Any
                       ) -> tuple[str, dict[str, Any]] | None:
    """The bundle of a container whose image's shared mount is there, verified against
    `checked_by`, with the bundle an earlier container made of it (`_remember_bundle`):
    that config.json with this container's arguments, on the same shared root. None
    (nothing taken) otherwise. What keeps it safe is the file's identity (device,
    inode, size, mtime, ctime): a changed image has another, so none of this."""
    from ocirt.runtime import sharedroot

    images = images_dir(store)
    mark_creator(directory, sharedroot.planned_of(images, cached.ident, cid).to_json())
    try:
        got = sharedroot.lease_cached(images, cached.ident, cid, checked_by, cached.name)
    except BaseException:
        mark_creator(directory)  # lease_cached took nothing
        raise
    if got is None:
        mark_creator(directory)
        return None
    lease, entry = got
    if not _entry_fits(entry, args, lease.lowers):  # not what _remember_bundle keeps
        _release_lease(lease)
        mark_creator(directory)
        return None  # made the full way, which keeps a good entry again
    try:
        _write_cached_bundle(directory, entry, args)
    except BaseException:
        _release_lease(lease)
        raise
    return directory, lease.to_json()


def _entry_fits(entry: Any, args: list[str], lowers: list[str]) -> bool:
    """A cache entry as `_remember_bundle` keeps it: a record that mounts nothing, a
    root that is the lease's one shared layer, and the command before the arguments."""
    try:
        record, config, prefix = entry["record"], entry["config"], entry["prefix"]
        return (len(lowers) == 1 and record.get("mode") == "mount"
                and record.get("mounts") == {"target": lowers[0], "writable": False,
                                             "steps": []}
                and config["root"]["path"] == lowers[0]
                and isinstance(config["process"], dict)
                and (not args or (isinstance(prefix, list)
                                  and all(isinstance(a, str) for a in prefix))))
    except (KeyError, TypeError, AttributeError):
        return False


def _write_cached_bundle(directory: str, entry: dict[str, Any], args: list[str]) -> None:
    """BUNDLE/.ocirt-sif.json and config.json from a cache entry (`_entry_fits`), with
    this container's arguments."""
    from ocirt import jsonio
    from ocirt.sif.record import RECORD
    from ocirt.state import write_atomic

    record, config = entry["record"], entry["config"]
    if args:
        config["process"]["args"] = [*entry["prefix"], *args]
    _make_bundle_dir(directory)
    try:
        for name, doc in ((RECORD, record), ("config.json", config)):
            write_atomic(os.path.join(directory, name),
                         (jsonio.dumps_pretty(doc, "\t") + "\n").encode(), 0o644)
    except BaseException:
        _remove_bundle_files(directory)
        raise


def _make_bundle_dir(directory: str) -> None:
    """The bundle directory, new or an empty one left there (as `ocirt sif bundle`)."""
    try:
        os.mkdir(directory, 0o755 if os.geteuid() == 0 else 0o700)
    except FileExistsError:
        if os.path.islink(directory) or not os.path.isdir(directory) or os.listdir(directory):
            raise OcirtError(f"bundle {directory}: exists and is not an empty directory") \
                from None


def _remember_bundle(lease: Any, directory: str, path: str, args: list[str],
                     writable: str | None) -> None:
    """Keep the bundle just made on the shared mount for the image's later containers:
    its record and config.json, and (with arguments) what comes before them in
    process.args, which is all they change."""
    name = _cache_name(path, args, writable)
    if name is None or len(lease.lowers) != 1:
        return
    from ocirt import jsonio
    from ocirt.runtime import sharedroot
    from ocirt.sif.record import RECORD

    try:
        docs = []
        for file in (RECORD, "config.json"):
            with open(os.path.join(directory, file), "rb") as f:
                docs.append(jsonio.loads(f.read()))
    except (OSError, ValueError):
        return
    record, config = docs
    given = (config.get("process") or {}).get("args")
    if not isinstance(given, list) or (args and given[len(given) - len(args):] != args):
        return  # not the image's command followed by the arguments: not cached
    prefix = given[:len(given) - len(args)] if args else None
    sharedroot.remember(lease, name, {"record": record, "config": config, "prefix": prefix})


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
        _remember_bundle(lease, directory, opened.path, args, writable)
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


def remove_orphan_bundle(store: Store, cid: str, mark_temps: bool = False) -> None:
    """The bundle of a `create --image CID` that was killed before it recorded it in
    the container's state: whatever is mounted below it is detached, then it goes (its
    lease on a shared image mount is then stale: ocirt.runtime.sharedroot drops it).
    With `mark_temps` (`delete --force` of an ID without state) also the temporary file
    of a mark that a SIGKILL cut short (see `_remove_mark_temps`), and the FirstTake
    file of a first container of an image killed while it mounted it."""
    from ocirt import jsonio
    from ocirt.linux import proc

    directory = bundle_dir(store, cid)
    if mark_temps:
        from ocirt.runtime.sharedroot import sweep_first_takes

        _remove_mark_temps(directory)
        sweep_first_takes(images_dir(store))
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


def _remove_mark_temps(directory: str) -> None:
    """The temporary files (CREATOR.PID.tmp, state.write_atomic's) of marks whose writer
    is gone: a create killed while it wrote one. Listing the directory is for a `delete
    --force` of a container without state, not for every delete."""
    from ocirt.linux import proc

    parent, base = os.path.split(_creator_file(directory))
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        pid = name[len(base) + 1:-len(".tmp")]
        if name.startswith(base + ".") and name.endswith(".tmp") and pid.isdigit() \
                and not proc.is_running(int(pid), None):
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
    if os.path.exists(directory) and not _remove_shared_bundle(directory):
        from ocirt.sif.bundle import remove_bundle as remove

        remove(directory)
    unmark_creator(directory)


def _remove_shared_bundle(directory: str) -> bool:
    """Remove a bundle whose root is a shared mount (its record mounts nothing) without
    the image code (ocirt.sif.bundle); False for any other, left to it."""
    from ocirt.sif.record import WORKDIR, read_record

    try:
        record = read_record(os.path.realpath(directory))
    except OcirtError:
        return False
    if record.get("mode") != "mount" or (record.get("mounts") or {}).get("steps") != []:
        return False
    if any(os.path.lexists(os.path.join(directory, d)) for d in ("rootfs", WORKDIR)):
        return False
    _remove_bundle_files(directory)
    return True


def _remove_bundle_files(directory: str) -> None:
    """config.json and the record, then the directory when nothing else is in it."""
    from ocirt.sif.record import RECORD

    for name in ("config.json", RECORD):
        try:
            os.unlink(os.path.join(directory, name))
        except FileNotFoundError:
            pass
    try:
        os.rmdir(directory)
    except OSError:
        pass  # the user put other files there (or it was never made): leave them
