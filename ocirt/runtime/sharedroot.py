"""One verified, read-only mount per SIF image, shared by every container of a state root.

Why: containers started from the same image on shared storage are only fast together
when they read through one squashfs superblock, so that what one decompressed the
others find in the page cache. A loop device and a superblock per container would each
read and decompress the image again.

Layout, under the state root's `@images` (Store.private_dir):

    @images/.lock            flock: shared to lease a mount that is there or give a
                             lease back while others stay, exclusive to mount, unmount
                             or drop stale references
    @images/KEY/image.json   the image's identity, the mount record, the verified policies
    @images/KEY/layers/lowerN/  the image's layers, mounted read-only (loop + squashfs
                             as root, squashfuse without privileges: one per user and image)
    @images/KEY/refs/REF     one file per container holding a lease
    @images/KEY/cache/NAME   what a caller derived from the image once (e.g. `run
                             --image`'s bundle config), for the image's later
                             containers (`remember`, `lease_cached`)

KEY is a digest of the image file's identity (device, inode, size, mtime, ctime) and of
how it is mounted; a file rewritten in place gets another key, so a mount never serves
a changed file as the one that was verified. Verification is done once per image and
policy (the policies that passed are remembered in image.json).

`lease_cached` is the common case made cheap: a container of an image whose mount is
intact, already verified against its policy, with a cache entry for what it needs, takes
its lease from the file's identity alone (one stat of the image file: no open, no parsing
of its header or descriptors, none of the image code imported). A file changed in place
has another identity, so another KEY without any of this: it is opened, verified and
mounted in full again. `FirstTake` makes a crowd started at once wait for the first of
them to mount the image and fill the cache, instead of each doing it all meanwhile.

The last `release` unmounts and removes KEY/. A reference is stale when its container is
gone or stopped and the process that took it is gone; a `release` drops those it meets
before a live one, and so the last live one's drops them all: a crash between the two
never keeps a mount alive. A KEY/
without a valid image.json is what a crash during mounting left: whatever is mounted
below it is detached and it is made again.
"""

from __future__ import annotations

import errno
import fcntl
import os

from ocirt import jsonio, log
from ocirt.errors import OcirtError
from ocirt.linux import proc

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from typing import Any

    from ocirt.sif.image import Image

IMAGES = "images"
META = "image.json"
REFS = "refs"
CACHE = "cache"


class NotShared(OcirtError):
    """The image's shared mount lives in another mount namespace that still uses it:
    the caller mounts the image for its container alone."""


class Lease:
    """A container's share of an image's mount: `lowers` are the mounted layers, bottom
    first (a single-layer image's root is lowers[0] itself)."""

    __slots__ = ("directory", "key", "ref", "lowers")

    def __init__(self, directory: str, key: str, ref: str, lowers: list[str]) -> None:
        self.directory = directory
        self.key = key
        self.ref = ref
        self.lowers = lowers

    def to_json(self) -> dict[str, Any]:
        return {"directory": self.directory, "key": self.key, "ref": self.ref,
                "lowers": self.lowers}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Lease:
        try:
            lease = cls(str(doc["directory"]), str(doc["key"]), str(doc["ref"]),
                        [str(x) for x in doc["lowers"]])
        except (KeyError, TypeError):
            raise OcirtError("shared image lease: malformed record") from None
        _check_name(lease.key, "key")
        _check_name(lease.ref, "reference")
        return lease


def _check_name(name: str, what: str) -> None:
    if not name or name.startswith(".") or "/" in name or "\0" in name:
        raise OcirtError(f"shared image lease: invalid {what} {name!r}")


def identity(image: Image, fuse: bool) -> dict[str, Any]:
    """What makes two opened files the same image for sharing one mount."""
    return identity_of(os.fstat(image.fd), fuse)


def identity_of(st: os.stat_result, fuse: bool) -> dict[str, Any]:
    """`identity` of the image file of stat `st` (without opening it as an Image)."""
    return {"dev": st.st_dev, "ino": st.st_ino, "size": st.st_size,
            "mtime": st.st_mtime_ns, "ctime": st.st_ctime_ns, "fuse": fuse,
            "uid": os.geteuid()}


def use_fuse(fuse: bool | None = None) -> bool:
    """Whether the image is (or would be) mounted with squashfuse: without root."""
    return (os.geteuid() != 0) if fuse is None else fuse


def _sha256(data: bytes = b"") -> Any:
    """A SHA-256 hash object. hashlib's own C implementation, imported directly: importing
    hashlib (it loads OpenSSL and blake2) costs ~7 ms, on the path every container of a
    shared image takes."""
    try:
        from _sha256 import sha256  # type: ignore[import-not-found]  # Python <= 3.11
    except ImportError:
        try:
            from _sha2 import sha256  # type: ignore[import-not-found]  # 3.12 and later
        except ImportError:
            from hashlib import sha256
    return sha256(data)


def image_key(ident: dict[str, Any]) -> str:
    return _sha256(jsonio.dumps(ident).encode()).hexdigest()[:32]


def cache_name(*parts: str) -> str:
    """A cache entry's file name for what `parts` describe."""
    return _sha256("\0".join(parts).encode()).hexdigest()[:32]


def policy_fingerprint(policy: Any) -> str:
    """A digest of what a policy checks: its flags and the content of its keys."""
    h = _sha256(f"{policy.require}:{policy.legacy}".encode())
    for path in sorted(policy.keys) + ["--pgp--"] + sorted(policy.pgp_keys):
        h.update(path.encode() + b"\0")
        if path != "--pgp--":
            try:
                with open(path, "rb") as f:
                    h.update(_sha256(f.read()).digest())
            except OSError:
                h.update(b"unreadable")
    return h.hexdigest()


class _Locked:
    """The flock of the images directory (created 0700 if missing): exclusive to mount,
    unmount or drop the last reference; shared to add a reference to a mount that is
    there or take one away while others stay (so that the containers of one image start
    and exit side by side, not one after another). `name`: another lock file there."""

    def __init__(self, directory: str, shared: bool = False, name: str = ".lock") -> None:
        from ocirt.state import make_private_dirs

        self.how = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        self.path = os.path.join(directory, name)
        try:
            make_private_dirs(directory)
            self.fd = os.open(self.path,
                              os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            from ocirt.errors import os_error_text

            raise OcirtError(f"shared image mounts: {os_error_text(exc)}") from None

    def __enter__(self) -> _Locked:
        fcntl.flock(self.fd, self.how)
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


class FirstTake:
    """Held (exclusive flock on @images/.KEY.first) by the container that mounts an image
    and makes the first bundle of it, while it does (`maker`): the others of a crowd
    started at once wait for it (a shared flock, so that they all go on together), then
    take the cache (`lease_cached`) instead of each opening, parsing and verifying the
    image while it is being mounted. Only a shortcut: the mount itself is guarded by
    .lock, so a race on this file (its maker removes it when done) lets two do the full
    work at once, as without it.

    The maker runs ahead of the crowd (`run_ahead`) until `done`: at the caller's own
    priority it got 1/N of the CPUs while the crowd's runtimes were starting, so that
    every one of them was waiting by the time it was done and they all went on at once
    (64 interpreters alive together instead of one after another: 1.25x the time of
    a crowd that found the image mounted, in the shared-storage benchmark)."""

    def __init__(self, directory: str, ident: dict[str, Any]) -> None:
        self.keydir = os.path.join(directory, image_key(ident))
        self.lock = _Locked(directory, name=f".{image_key(ident)}.first")
        self.niceness: int | None = None
        try:
            fcntl.flock(self.lock.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.maker = True
        except BlockingIOError:  # another is making it: wait until it is done
            fcntl.flock(self.lock.fd, fcntl.LOCK_SH)
            self.maker = False
        else:
            self.niceness = run_ahead()

    def is_mounted(self) -> bool:
        """Whether the image is mounted (or being mounted) here by now."""
        return os.path.lexists(self.keydir)

    def done(self) -> None:
        """The maker's work is done (or given up): its priority back, the crowd let go."""
        if self.niceness is not None:
            give_back_priority(self.niceness)
            self.niceness = None
        if self.maker:
            try:
                os.unlink(self.lock.path)
            except FileNotFoundError:
                pass
        self.lock.__exit__()


AHEAD = -20  # the highest priority: the crowd waits for this process and nothing else


def run_ahead() -> int | None:
    """Raise this process's CPU priority to AHEAD for work that a crowd waits on; the
    niceness to give back (`give_back_priority`), None where it was not raised: already
    that high, or not allowed (without CAP_SYS_NICE or an RLIMIT_NICE that allows it,
    e.g. rootless: the work is then done at the caller's priority, as before)."""
    try:
        niceness = os.getpriority(os.PRIO_PROCESS, 0)
        if niceness <= AHEAD:
            return None
        os.setpriority(os.PRIO_PROCESS, 0, AHEAD)
    except OSError:
        return None
    log.debug(f"mounting the image ahead of the crowd at nice {AHEAD} (was {niceness})")
    return niceness


def give_back_priority(niceness: int) -> None:
    """The caller's niceness again, before anything of the container runs (it inherits
    the runtime's). Lowering one's own priority is always allowed."""
    os.setpriority(os.PRIO_PROCESS, 0, niceness)


def sweep_first_takes(directory: str) -> None:
    """Remove the FirstTake files that no one holds: a maker SIGKILLed before it was
    done leaves its file (one that finishes removes its own). For `delete --force` after
    a crash and the last release of a mount."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not (name.startswith(".") and name.endswith(".first")):
            continue
        path = os.path.join(directory, name)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(path)
        except OSError:
            pass  # held: its maker is at work
        finally:
            os.close(fd)


def planned(directory: str, image: Image, ref: str, fuse: bool | None = None) -> Lease:
    """The lease `acquire` would give `ref` (without its layers): what a caller records
    before taking it, so that `release` after a crash at any instant finds it."""
    return planned_of(directory, identity(image, use_fuse(fuse)), ref)


def planned_of(directory: str, ident: dict[str, Any], ref: str) -> Lease:
    """`planned` for the image of identity `ident`."""
    _check_name(ref, "reference")
    return Lease(directory, image_key(ident), ref, [])


def has_cache(directory: str, ident: dict[str, Any], name: str) -> bool:
    """Whether the shared mount of the image of identity `ident` has the cache entry
    `name` (a hint: `lease_cached` checks again, under the lock)."""
    return os.path.exists(os.path.join(directory, image_key(ident), CACHE, name))


def lease_cached(directory: str, ident: dict[str, Any], ref: str, checked_by: Any,
                 name: str) -> tuple[Lease, Any] | None:
    """A lease for `ref` and the cache entry `name`, when the image of identity `ident`
    is mounted here intact, has passed `checked_by` (None: no checking) and has that
    entry (`remember`); else None, with nothing taken: the caller opens the image and
    calls `acquire`. The file's identity is what ties the entry and the verdict to it."""
    _check_name(ref, "reference")
    _check_name(name, "cache entry")
    key = image_key(ident)
    keydir = os.path.join(directory, key)
    fingerprint = policy_fingerprint(checked_by) if checked_by is not None else None
    with _Locked(directory, shared=True):
        meta = _intact_meta(keydir, ident)
        if meta is None or (fingerprint is not None
                            and fingerprint not in (meta.get("verified") or [])):
            return None
        try:
            with open(os.path.join(keydir, CACHE, name), "rb") as f:
                entry = jsonio.loads(f.read())
        except (OSError, ValueError):
            return None
        _write_ref(keydir, ref)
    if fingerprint is not None:
        log.debug(f"{meta.get('image')}: already verified against this policy")
    log.debug(f"{meta.get('image')}: shared mount {keydir} leased to {ref} (cached)")
    return Lease(directory, key, ref, list(meta["lowers"])), entry


def remember(lease: Lease, name: str, entry: Any) -> None:
    """Keep `entry` (JSON) for the image's later containers (`lease_cached`), as long
    as its mount lives. The lease held keeps KEY/ there while it is written."""
    from ocirt.state import make_private_dirs, write_atomic

    _check_name(name, "cache entry")
    cache = os.path.join(lease.directory, lease.key, CACHE)
    with _Locked(lease.directory, shared=True):
        make_private_dirs(cache)
        write_atomic(os.path.join(cache, name), jsonio.dumps(entry).encode())


def acquire(directory: str, image: Image, ref: str, checked_by: Any = None,
            fuse: bool | None = None) -> Lease:
    """A lease on the shared mount of the open `image` for container `ref`, mounting it
    first when no container of this state root has it; the image is verified against
    `checked_by` unless it already passed that policy."""
    _check_name(ref, "reference")
    fuse = use_fuse(fuse)
    ident = identity(image, fuse)
    key = image_key(ident)
    keydir = os.path.join(directory, key)
    with _Locked(directory, shared=True):  # the common case: it is mounted already
        meta = _intact_meta(keydir, ident)
        if meta is not None:
            if checked_by is not None:
                _verify_once(keydir, meta, image, checked_by)
            _write_ref(keydir, ref)
            log.debug(f"{image.path}: shared mount {keydir} leased to {ref}")
            return Lease(directory, key, ref, list(meta["lowers"]))
    with _Locked(directory):
        meta = _load_meta(keydir, ident)
        if meta is None:
            meta = _mount(keydir, image, ident, checked_by, fuse)
        elif checked_by is not None:
            _verify_once(keydir, meta, image, checked_by)
        _write_ref(keydir, ref)  # (stale ones are the last release's to drop)
    log.debug(f"{image.path}: shared mount {keydir} leased to {ref}")
    return Lease(directory, key, ref, list(meta["lowers"]))


def release(lease: Lease) -> None:
    """Give back a lease; the last one unmounts the image."""
    keydir = os.path.join(lease.directory, lease.key)
    if not os.path.isdir(keydir):
        return
    with _Locked(lease.directory, shared=True):  # the common case: others still use it
        try:
            os.unlink(os.path.join(keydir, REFS, lease.ref))
        except FileNotFoundError:
            pass
        if _any_live(lease.directory, keydir, drop=False):  # (a take may rewrite one)
            return
    with _Locked(lease.directory):  # maybe the last: no lease is taken while we look
        if not _any_live(lease.directory, keydir):
            _unmount(keydir)
            sweep_first_takes(lease.directory)


def _intact_meta(keydir: str, ident: dict[str, Any]) -> dict[str, Any] | None:
    """The image's record when its mount is intact here, else None (nothing changed)."""
    if not os.path.lexists(keydir):
        return None
    try:
        with open(os.path.join(keydir, META), "rb") as f:
            meta = jsonio.loads(f.read())
        intact = (isinstance(meta, dict) and meta.get("identity") == ident
                  and meta.get("mntns") == _mount_ns()
                  and all(_is_mounted(p) for p in meta.get("lowers") or [None]))
    except (OSError, ValueError):
        intact = False
    return meta if intact else None


def _load_meta(keydir: str, ident: dict[str, Any]) -> dict[str, Any] | None:
    """The image's record when its mount is intact here; otherwise None, after
    removing what a crash left."""
    meta = _intact_meta(keydir, ident)
    if meta is not None or not os.path.lexists(keydir):
        return meta
    if _other_namespace(keydir):
        _drop_stale(os.path.dirname(keydir), keydir)
        if _refs(keydir):
            raise NotShared(f"shared image mount {keydir} is in use in another mount "
                            "namespace")
    _reset(keydir)
    return None


def _mount(keydir: str, image: Image, ident: dict[str, Any], checked_by: Any,
           fuse: bool) -> dict[str, Any]:
    import shutil

    from ocirt.sif.mount import mount_layers
    from ocirt.sif.mount import release as release_mount

    verified = []
    if checked_by is not None:
        from ocirt.sif.policy import verify_image

        verify_image(image, checked_by)
        verified.append(policy_fingerprint(checked_by))
    os.mkdir(keydir, 0o711)
    try:
        os.mkdir(os.path.join(keydir, REFS), 0o700)
        record, lowers = mount_layers(image, os.path.join(keydir, "layers"), fuse=fuse)
    except BaseException:
        shutil.rmtree(keydir, ignore_errors=True)
        raise
    meta = {"identity": ident, "image": image.path, "mntns": _mount_ns(),
            "record": record.to_json(), "lowers": lowers, "verified": verified}
    try:
        _write_meta(keydir, meta)
    except BaseException:
        release_mount(record)
        shutil.rmtree(keydir, ignore_errors=True)
        raise
    log.debug(f"{image.path}: mounted once for the state root at {keydir}")
    return meta


def _verify_once(keydir: str, meta: dict[str, Any], image: Image, checked_by: Any) -> None:
    fingerprint = policy_fingerprint(checked_by)
    if fingerprint in meta.get("verified", []):
        log.debug(f"{image.path}: already verified against this policy")
        return
    from ocirt.sif.policy import verify_image

    verify_image(image, checked_by)
    meta.setdefault("verified", []).append(fingerprint)
    _write_meta(keydir, meta)


def _write_meta(keydir: str, meta: dict[str, Any]) -> None:
    from ocirt.state import write_atomic

    write_atomic(os.path.join(keydir, META), jsonio.dumps(meta).encode())


def _write_ref(keydir: str, ref: str) -> None:
    from ocirt.state import write_atomic

    me = os.getpid()
    write_atomic(os.path.join(keydir, REFS, ref),
                 jsonio.dumps({"pid": me, "start": proc.start_time(me)}).encode())


def _refs(keydir: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(os.path.join(keydir, REFS))
                      if not n.endswith(".tmp"))
    except OSError:
        return []


def _drop_stale(directory: str, keydir: str) -> None:
    """Remove references whose container is gone (or stopped) and whose taker is gone."""
    _any_live(directory, keydir, every=True)


def _any_live(directory: str, keydir: str, every: bool = False, drop: bool = True) -> bool:
    """Whether a live reference is left, dropping the stale ones met before it (`every`:
    all of them; not `drop`: none, as under the shared lock, where a take may be writing
    a reference of the same name). Stopping at the first live one keeps a give-back O(1)
    however many containers share the image (checking them all, under the lock, for each
    of thousands of containers would serialize their starts and exits)."""
    from ocirt.state import Store

    store = Store(os.path.dirname(directory))
    found = False
    for ref in _refs(keydir):
        path = os.path.join(keydir, REFS, ref)
        if _live(store, ref, path):
            found = True
            if not every:
                break
            continue
        if not drop:
            continue
        log.debug(f"shared image {keydir}: dropping the stale reference of {ref}")
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    return found


def _live(store: Any, ref: str, path: str) -> bool:
    from ocirt.state import STOPPED

    try:
        with open(path, "rb") as f:
            taker = jsonio.loads(f.read())
        if proc.is_running(int(taker["pid"]), taker.get("start")):
            return True
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        return store.load(ref).status() != STOPPED
    except OcirtError:
        return False


def _unmount(keydir: str) -> None:
    from ocirt.sif.mount import MountRecord
    from ocirt.sif.mount import release as release_mount

    try:
        with open(os.path.join(keydir, META), "rb") as f:
            record = MountRecord.from_json(jsonio.loads(f.read())["record"])
        _check_inside(keydir, record)
        release_mount(record)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    _reset(keydir)


def _check_inside(keydir: str, record: Any) -> None:
    real = os.path.realpath(keydir)
    for step in record.steps:
        if not os.path.realpath(step["path"]).startswith(real + os.sep):
            raise OcirtError(f"{keydir}/{META}: step {step['path']!r} is outside it")


def _reset(keydir: str) -> None:
    """Detach whatever is mounted below `keydir` (deepest first) and remove it."""
    import shutil

    from ocirt.sif.mount import MountError, MountRecord
    from ocirt.sif.mount import release as release_mount

    real = os.path.realpath(keydir)
    below = sorted((m for m in _mount_points() if m.startswith(real + "/")),
                   key=len, reverse=True)
    kinds = _fuse_points()
    steps = [{"kind": "fuse" if m in kinds else "mount", "path": m} for m in below]
    try:
        release_mount(MountRecord(list(reversed(steps))))
    except MountError as exc:
        raise OcirtError(f"shared image {keydir}: {exc.message}") from None
    shutil.rmtree(keydir, ignore_errors=True)
    if os.path.lexists(keydir):
        raise OcirtError(f"shared image {keydir}: could not be removed")


def _mount_points() -> list[str]:
    from ocirt.linux.mountinfo import unescape

    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        return [unescape(line.split()[4]) for line in f]


def _fuse_points() -> set[str]:
    from ocirt.linux.mountinfo import unescape

    out = set()
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1].startswith("fuse"):
                out.add(unescape(fields[4]))
    return out


def _is_mounted(path: str | None) -> bool:
    return path is not None and os.path.realpath(path) in _mount_points()


def _mount_ns() -> str:
    try:
        return os.readlink("/proc/self/ns/mnt")
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return ""
        raise


def _other_namespace(keydir: str) -> bool:
    try:
        with open(os.path.join(keydir, META), "rb") as f:
            return jsonio.loads(f.read()).get("mntns") not in (None, _mount_ns())
    except (OSError, ValueError, AttributeError):
        return False
