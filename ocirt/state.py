"""The container state store under `--root`, and the container state machine.

Layout: `<root>/<id>/state.json` (written atomically: temp file + rename), `exec.fifo`
(exists from `create` until `start`: the init waits on it) and `config.json` (a snapshot
of the bundle's config, because later edits of the bundle must not affect the container).
A per-container `flock` on the directory serializes commands that change a container.

Status is derived the way runc derives it: the recorded init PID plus its start time
must still name a live process, otherwise the container is `stopped` (PIDs are reused);
while the exec fifo exists it is `created`, afterwards `running`; a frozen cgroup makes
it `paused`.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time

from ocirt import jsonio
from ocirt.errors import ContainerNotExist, InvalidState, OcirtError
from ocirt.linux import proc

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from typing import Any

CREATING, CREATED, RUNNING, PAUSED, STOPPED = "creating", "created", "running", "paused", "stopped"

STATE_FILE = "state.json"
FIFO_FILE = "exec.fifo"
CONFIG_FILE = "config.json"

# The states each operation may start from. This is the one place that says so.
ALLOWED: dict[str, frozenset[str]] = {
    "start": frozenset({CREATED}),
    "kill": frozenset({CREATED, RUNNING, PAUSED}),
    "delete": frozenset({CREATED, STOPPED}),
    "exec": frozenset({CREATED, RUNNING}),
    "pause": frozenset({CREATED, RUNNING}),
    "resume": frozenset({PAUSED}),
    "update": frozenset({CREATED, RUNNING, PAUSED}),
    "ps": frozenset({CREATED, RUNNING, PAUSED}),
}


def refusal(op: str, status: str, cid: str) -> str:
    """runc's message for an operation refused in `status`."""
    if op == "start":
        if status == STOPPED:
            return "cannot start a container that has stopped"
        if status == RUNNING:
            return "cannot start an already running container"
        return f"cannot start a container in the {status} state"
    if op == "delete":
        return f"cannot delete container {cid} that is not stopped: {status}"
    if op == "exec":
        if status == PAUSED:
            return "cannot exec in a paused container (use --ignore-paused to override)"
        return f"cannot exec in a {status} container"
    if op == "resume":
        return "container not paused"
    if status == CREATING:
        return "container is still being created"
    return "container not running"


def check_transition(op: str, status: str, cid: str) -> None:
    if status not in ALLOWED[op]:
        raise InvalidState(refusal(op, status, cid))


_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+,-.")


def validate_id(cid: str) -> str:
    """runc's rule: `^[\\w+-\\.]+$` (letters, digits, `_ + , - .`), and not `.` or `..`.

    Checked before any path is built from the ID.
    """
    if not cid:
        raise OcirtError("container id cannot be empty")
    if cid in (".", "..") or not set(cid) <= _ID_CHARS:
        raise OcirtError("invalid container ID format")
    return cid


def rfc3339_nano(ns: int) -> str:
    """Go's time.RFC3339Nano in UTC: fractional seconds without trailing zeros."""
    secs, frac = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    digits = f"{frac:09d}".rstrip("0")
    return f"{base}.{digits}Z" if digits else f"{base}Z"


class Container:
    """A container's recorded state plus its derived status."""

    __slots__ = ("id", "dir", "data")

    def __init__(self, cid: str, directory: str, data: dict[str, Any]) -> None:
        self.id = cid
        self.dir = directory
        self.data = data

    @property
    def pid(self) -> int:
        return int(self.data.get("pid") or 0)

    @property
    def bundle(self) -> str:
        return str(self.data.get("bundle", ""))

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def init_alive(self) -> bool:
        return proc.is_running(self.pid, self.data.get("init_start"))

    def status(self) -> str:
        if self.data.get("creating"):
            creator = self.data.get("creator") or [0, None]
            if proc.is_running(int(creator[0]), creator[1]):
                return CREATING
            return STOPPED  # its `create` died: nothing to wait for, only to clean up
        if not self.init_alive():
            return STOPPED
        if self.is_paused():
            return PAUSED
        if os.path.lexists(self.path(FIFO_FILE)):
            return CREATED
        return RUNNING

    def is_paused(self) -> bool:
        cg = self.data.get("cgroup")
        if not cg:
            return False
        from ocirt.cgroups import frozen_from_state

        return frozen_from_state(cg)

    def oci_state(self, status: str | None = None) -> dict[str, Any]:
        """The runtime-spec state, with runc's extra fields, in runc's key order."""
        status = status or self.status()
        out: dict[str, Any] = {
            "ociVersion": self.data.get("ociVersion", ""),
            "id": self.id,
            "pid": self.pid if status not in (STOPPED, CREATING) else 0,
            "status": status,
            "bundle": self.bundle,
            "rootfs": self.data.get("rootfs", ""),
            "created": self.data.get("created", ""),
        }
        annotations = self.data.get("annotations")
        if annotations:
            out["annotations"] = annotations
        out["owner"] = ""
        return out

    def config(self) -> dict[str, Any]:
        """The config.json snapshot taken at create time."""
        with open(self.path(CONFIG_FILE), "rb") as f:
            return jsonio.loads(f.read())


class Lock:
    """An exclusive flock on a container's directory, released on close."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Store:
    """State directories under one `--root`."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def private_dir(self, name: str) -> str:
        """A directory of the runtime's own under the state root. Its name starts with
        `@`, which no container ID may hold, so no container can be named like it (a
        container called `.cache` once shared the seccomp cache's directory)."""
        return os.path.join(self.root, "@" + name)

    def cache_dir(self, name: str) -> str:
        """A cache under the state root (not a container: no state.json in it)."""
        return os.path.join(self.private_dir("cache"), name)

    def dir(self, cid: str) -> str:
        return os.path.join(self.root, validate_id(cid))

    def claim(self, cid: str) -> Lock:
        """Create and lock the directory of a new container; the ID must be unused."""
        directory = self.dir(cid)
        try:
            os.makedirs(self.root, 0o700, exist_ok=True)
        except OSError as exc:
            raise OcirtError(f"create state root {self.root}: {os.strerror(exc.errno)}") from None
        try:
            os.mkdir(directory, 0o711)
        except FileExistsError:
            raise OcirtError("container with given ID already exists") from None
        except OSError as exc:  # e.g. the system's root seen from a user namespace
            raise OcirtError(f"create state directory {directory}: "
                             f"{os.strerror(exc.errno or 0).lower()} (is --root right?)") from None
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return Lock(fd)

    def lock(self, cid: str) -> Lock:
        """Lock an existing container; raises ContainerNotExist if it is (or gets) deleted."""
        directory = self.dir(cid)
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ContainerNotExist() from None
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink == 0:  # deleted while we waited for the lock
            os.close(fd)
            raise ContainerNotExist()
        return Lock(fd)

    def load(self, cid: str) -> Container:
        directory = self.dir(cid)
        try:
            with open(os.path.join(directory, STATE_FILE), "rb") as f:
                raw = f.read()
        except (FileNotFoundError, NotADirectoryError):
            raise ContainerNotExist() from None
        try:
            data = jsonio.loads(raw)
        except ValueError as exc:
            raise OcirtError(f"corrupt state file {directory}/{STATE_FILE}: {exc}") from None
        return Container(cid, directory, data)

    def save(self, container: Container) -> None:
        write_atomic(container.path(STATE_FILE), jsonio.dumps(container.data).encode())

    def remove(self, cid: str) -> None:
        directory = self.dir(cid)
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return
        for name in names:
            try:
                os.unlink(os.path.join(directory, name))
            except IsADirectoryError:
                import shutil

                shutil.rmtree(os.path.join(directory, name), ignore_errors=True)
            except FileNotFoundError:
                pass
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            pass

    def ids(self) -> list[str]:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if os.path.isfile(os.path.join(self.root, n, STATE_FILE)))


def make_private_dirs(path: str) -> None:
    """os.makedirs, but every directory it makes is 0700: makedirs gives the parents
    0777 & ~umask, so a first container with a seccomp filter (the cache under the state
    root) or a SIF image left a fresh state root world-readable (runc's is 0700)."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass


def write_atomic(path: str, data: bytes, mode: int = 0o600) -> None:
    """Write via a temporary file and rename, so readers never see a partial file."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    try:
        os.rename(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if exc.errno == errno.ENOENT:
            raise ContainerNotExist() from None
        raise


def root_owner(root: str) -> tuple[int, int] | None:
    """(uid, gid) of the non-root user who owns the state root (the directory, a symlink
    naming it, or the directory holding it), None when root owns all of them or the root
    does not exist yet.

    Why: Slurm runs its RunTimeQuery/RunTimeDelete commands as root against the job
    user's own state root; state written by a user (its mount records, cgroup paths) must
    never be acted on with root's privileges, so root becomes that user first.
    """
    parent = os.path.dirname(os.path.abspath(root))
    for path, follow in ((root, False), (root, True), (parent, True)):
        try:
            st = os.stat(path, follow_symlinks=follow)
        except OSError:
            continue
        if st.st_uid != 0:
            return st.st_uid, st.st_gid
    return None


def act_as_root_owner(root: str) -> None:
    """Called as root: continue as the user who owns the state root, if that is not root."""
    owner = root_owner(root)
    if owner is not None:
        from ocirt import log

        log.debug(f"state root {root} belongs to uid {owner[0]}: acting as that user")
        proc.become_user(*owner)
