"""CRIU's RPC (`criu swrk FD`), for what its command line cannot do: a container with a
terminal. The pty master of such a container lives outside it (with the engine that
got it over the console socket), so its slave is dumped without a master, and at restore
CRIU makes a new pair and hands the master back ("orphan-pts-master", a notification
with the fd attached) for the runtime to pass to --console-socket, as runc does. Only
RPC has `orphan_pts_master`.

The options are the same CLI words `ocirt.runtime.criu` builds for the command line,
translated here field by field into CRIU's `criu_opts` (images/rpc.proto of CRIU), so
both paths stay one list. The messages are protobuf (proto2), encoded and decoded by
the few lines below: no protobuf library is needed for a dozen scalar fields.
"""

from __future__ import annotations

import _socket
import os

from ocirt.errors import OcirtError

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from collections.abc import Callable

# criu_req_type
DUMP, RESTORE, PRE_DUMP, NOTIFY = 1, 2, 4, 6
_TYPES = {"dump": DUMP, "restore": RESTORE, "pre-dump": PRE_DUMP}
# criu_cg_mode
_CG_MODES = {"ignore": 0, "soft": 3, "full": 4, "strict": 5}
_CLONE_NEWNET = 0x40000000

# criu_opts fields: CLI flag -> (field number, kind); "flag" is a bool set by the flag
_FLAGS = {"--evasive-devices": 6, "--tcp-established": 5, "--ext-unix-sk": 4,
          "--shell-job": 7, "--file-locks": 8, "--auto-dedup": 16, "--leave-running": 3,
          "--track-mem": 15}
_STRINGS = {"--root": 13, "--freeze-cgroup": 44, "--lsm-profile": 53,
            "--lsm-mount-context": 63, "--prev-images-dir": 14, "--external": 37}
_IGNORED = {"-d", "--pidfile"}  # an RPC restore is always detached; the pid comes back


# --- protobuf, the little of it CRIU's messages need ----------------------------------


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, value: int | bool | str | bytes) -> bytes:
    """One encoded field: ints and bools as varints, str and bytes length-delimited."""
    if isinstance(value, (bool, int)):
        return _varint(number << 3) + _varint(int(value))
    data = value.encode() if isinstance(value, str) else value
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def decode(data: bytes) -> dict[int, list[int | bytes]]:
    """Field number -> its values (varints as ints, length-delimited as bytes)."""
    out: dict[int, list[int | bytes]] = {}
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(data, pos)
            out.setdefault(number, []).append(value)
        elif wire == 2:
            size, pos = _read_varint(data, pos)
            if pos + size > len(data):
                raise ValueError("criu rpc: truncated message")
            out.setdefault(number, []).append(data[pos:pos + size])
            pos += size
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"criu rpc: wire type {wire} in a response")
    return out


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if pos >= len(data):
            raise ValueError("criu rpc: truncated message")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


# --- the CLI words as criu_opts -------------------------------------------------------


class Options:
    """criu_opts built from the command-line words, with the images directory opened as
    the descriptor RPC wants (kept open until close()).

    The work directory (where CRIU's log goes and where it mounts its cgroup yard) is
    named by path in an RPC configuration file, not by descriptor: CRIU would chdir
    into /proc/<our pid>/fd/N, a directory of our mount namespace, and a restore's CRIU
    runs in a mount namespace of its own, where mounting there fails (EINVAL)."""

    def __init__(self, args: list[str], log_name: str, work: str) -> None:
        self.fds: list[int] = []
        self.conf = ""
        self.body = field(10, log_name) + field(12, True) + field(50, True)
        try:
            self._translate(list(args))
            self._work_dir(work)
        except BaseException:
            self.close()
            raise

    def _work_dir(self, work: str) -> None:
        import tempfile

        if '"' in work or "\n" in work:
            raise OcirtError(f"criu rpc: work directory {work!r}: no quotes or newlines")
        fd, self.conf = tempfile.mkstemp(prefix=".ocirt-criu-", suffix=".conf", dir=work)
        with os.fdopen(fd, "w") as f:
            f.write(f'work-dir "{work}"\n')
        self.body += field(51, self.conf)

    def add(self, args: list[str]) -> None:
        """More words (those known only once CRIU is in its cgroup: --cgroup-root)."""
        self._translate(list(args), need_images=False)

    def _dir_fd(self, path: str) -> int:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise OcirtError(f"open {path}: {os.strerror(exc.errno or 0)}") from None
        self.fds.append(fd)
        return fd

    def _translate(self, args: list[str], need_images: bool = True) -> None:
        has_images = False
        while args:
            word = args.pop(0)
            if word in _FLAGS:
                self.body += field(_FLAGS[word], True)
            elif word in _IGNORED:
                if word == "--pidfile":
                    args.pop(0)
            elif word in _STRINGS:
                self.body += field(_STRINGS[word], args.pop(0))
            elif word == "-D":
                self.body += field(1, self._dir_fd(args.pop(0)))
                has_images = True
            elif word == "-W":
                args.pop(0)  # the configuration file names it (see the class)
            elif word == "-t":
                self.body += field(2, int(args.pop(0)))
            elif word.startswith("-v"):
                self.body += field(9, int(word[2:] or "2"))
            elif word.startswith("--manage-cgroups="):
                self.body += field(34, _CG_MODES[word.split("=", 1)[1]])
            elif word == "--empty-ns":
                if args.pop(0) != "net":
                    raise OcirtError("criu rpc: --empty-ns takes only net")
                self.body += field(38, _CLONE_NEWNET)
            else:
                self._nested(word, args.pop(0) if args else "")
        if need_images and not has_images:
            raise OcirtError("criu rpc: no images directory (-D)")

    def _nested(self, word: str, value: str) -> None:
        if word == "--inherit-fd":  # fd[N]:KEY
            number, _, key = value.partition(":")
            fd = int(number.removeprefix("fd[").removesuffix("]"))  # CRIU's own fd
            self.body += field(27, field(1, key) + field(2, fd))
        elif word == "--cgroup-root":  # [CTRL:]PATH
            ctrl, sep, path = value.rpartition(":") if ":" in value else ("", "", value)
            inner = (field(1, ctrl) if sep else b"") + field(2, path)
            self.body += field(25, inner)
        elif word == "--join-ns":  # NS:FILE
            ns, _, path = value.partition(":")
            self.body += field(39, field(1, ns) + field(2, path))
        else:
            raise OcirtError(f"criu rpc: {word} has no RPC equivalent here")

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        if self.conf:
            try:
                os.unlink(self.conf)
            except FileNotFoundError:
                pass
            self.conf = ""


# --- the conversation -----------------------------------------------------------------


class Session:
    """One request over a SOCK_SEQPACKET pair: `child` goes to `criu swrk`."""

    def __init__(self) -> None:
        self.sock, peer = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET, 0)
        self.child = peer.detach()

    def argv(self, binary: str) -> list[str]:
        return [binary, "swrk", str(self.child)]

    def close_child(self) -> None:
        if self.child >= 0:
            os.close(self.child)
            self.child = -1

    def request(self, action: str, opts: Options,
                notify: Callable[[str, list[int]], None] | None = None) -> int:
        """Send the request and answer CRIU's notifications until its response; the
        restored (or dumped) init's pid where CRIU gives one, else 0. A failure raises
        with CRIU's own message (empty when it has none: the log says it)."""
        self.sock.send(field(1, _TYPES[action]) + field(2, opts.body))
        while True:
            data, fds = self._receive()
            resp = decode(data)
            kind = int(resp.get(1, [0])[0])
            if kind == NOTIFY:
                script = _text(_sub(resp, 5).get(1, [b""])[0])
                try:
                    if notify is not None:
                        notify(script, fds)
                finally:
                    for fd in fds:
                        os.close(fd)
                self.sock.send(field(1, NOTIFY) + field(3, True))
                continue
            if not resp.get(2, [0])[0]:
                raise Failed(_text(resp.get(9, [b""])[0]))
            return int(_sub(resp, 4).get(1, [0])[0])

    def _receive(self) -> tuple[bytes, list[int]]:
        import array

        data, anc, _, _ = self.sock.recvmsg(1 << 20, _socket.CMSG_SPACE(16))
        if not data:
            raise Failed("")  # CRIU went away without a response
        fds: list[int] = []
        for level, kind, payload in anc:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                got = array.array("i")
                got.frombytes(payload[:len(payload) - len(payload) % 4])
                fds += list(got)
        return data, fds

    def close(self) -> None:
        self.close_child()
        self.sock.close()


class Failed(Exception):
    """CRIU answered "failed" (or hung up); the caller adds the log's first error."""


def _sub(resp: dict[int, list[int | bytes]], number: int) -> dict[int, list[int | bytes]]:
    raw = resp.get(number)
    return decode(raw[0]) if raw and isinstance(raw[0], bytes) else {}


def _text(value: int | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
