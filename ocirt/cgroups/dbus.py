"""A minimal D-Bus client: the wire format, EXTERNAL authentication over a unix socket,
method calls and signals. Enough to ask systemd for a transient scope (`ocirt.cgroups.
systemd`) without a library; values are Python objects typed by D-Bus signatures
(a variant is a `(signature, value)` pair, a struct a tuple, a dict entry array a list
of pairs).
"""

from __future__ import annotations

import os
import socket
import struct
import time

from ocirt.errors import OcirtError

TYPE_CHECKING = False  # importing typing costs ~2 ms (and pulls in re); annotations only
if TYPE_CHECKING:
    from typing import Any

METHOD_CALL, METHOD_RETURN, ERROR, SIGNAL = 1, 2, 3, 4
NO_REPLY = 0x1
F_PATH, F_INTERFACE, F_MEMBER, F_ERROR, F_REPLY_SERIAL, F_DESTINATION, F_SENDER, \
    F_SIGNATURE = 1, 2, 3, 4, 5, 6, 7, 8
_FIELD_TYPES = {F_PATH: "o", F_INTERFACE: "s", F_MEMBER: "s", F_ERROR: "s",
                F_REPLY_SERIAL: "u", F_DESTINATION: "s", F_SENDER: "s", F_SIGNATURE: "g"}
_FIXED = {"y": ("B", 1), "b": ("I", 4), "n": ("h", 2), "q": ("H", 2), "i": ("i", 4),
          "u": ("I", 4), "x": ("q", 8), "t": ("Q", 8), "d": ("d", 8), "h": ("I", 4)}
_ALIGN = {"s": 4, "o": 4, "g": 1, "a": 4, "(": 8, "{": 8, "v": 1}
SYSTEM_BUS = "/run/dbus/system_bus_socket"


class DBusError(OcirtError):
    """An error reply: `name` is the D-Bus error name."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}" if message else name)
        self.name = name


def split_signature(sig: str) -> list[str]:
    """The complete types of a signature: "sa(sv)u" -> ["s", "a(sv)", "u"]."""
    types = []
    i = 0
    while i < len(sig):
        j = _type_end(sig, i)
        types.append(sig[i:j])
        i = j
    return types


def _type_end(sig: str, i: int) -> int:
    ch = sig[i]
    if ch == "a":
        return _type_end(sig, i + 1)
    if ch in "({":
        close = ")" if ch == "(" else "}"
        depth = 0
        for j in range(i, len(sig)):
            if sig[j] == ch:
                depth += 1
            elif sig[j] == close:
                depth -= 1
                if depth == 0:
                    return j + 1
        raise ValueError(f"unbalanced signature {sig!r}")
    if ch in _FIXED or ch in "sogv":
        return i + 1
    raise ValueError(f"unknown type {ch!r} in signature {sig!r}")


def _alignment(t: str) -> int:
    return _FIXED[t[0]][1] if t[0] in _FIXED else _ALIGN[t[0]]


class Writer:
    """Little-endian marshalling; offsets count from the start of the message."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def align(self, n: int) -> None:
        self.buf += b"\0" * (-len(self.buf) % n)

    def put(self, t: str, value: Any) -> None:
        ch = t[0]
        if ch in _FIXED:
            fmt, size = _FIXED[ch]
            self.align(size)
            self.buf += struct.pack("<" + fmt, int(value) if ch == "b" else value)
        elif ch in "so":
            data = value.encode()
            self.align(4)
            self.buf += struct.pack("<I", len(data)) + data + b"\0"
        elif ch == "g":
            data = value.encode()
            self.buf += struct.pack("<B", len(data)) + data + b"\0"
        elif ch == "v":
            sig, inner = value
            self.put("g", sig)
            self.put(sig, inner)
        elif ch == "a":
            self._array(t[1:], value)
        elif ch in "({":
            self.align(8)
            for sub, item in zip(split_signature(t[1:-1]), value, strict=True):
                self.put(sub, item)
        else:
            raise ValueError(f"cannot marshal type {t!r}")

    def _array(self, elem: str, value: Any) -> None:
        self.align(4)
        at = len(self.buf)
        self.buf += b"\0\0\0\0"
        self.align(_alignment(elem))
        start = len(self.buf)
        items = value.items() if isinstance(value, dict) else value
        for item in items:
            self.put(elem, item)
        struct.pack_into("<I", self.buf, at, len(self.buf) - start)


class Reader:
    def __init__(self, buf: bytes, pos: int = 0) -> None:
        self.buf = buf
        self.pos = pos

    def align(self, n: int) -> None:
        self.pos += -self.pos % n

    def get(self, t: str) -> Any:
        ch = t[0]
        if ch in _FIXED:
            fmt, size = _FIXED[ch]
            self.align(size)
            (value,) = struct.unpack_from("<" + fmt, self.buf, self.pos)
            self.pos += size
            return bool(value) if ch == "b" else value
        if ch in "so":
            self.align(4)
            (n,) = struct.unpack_from("<I", self.buf, self.pos)
            value = self.buf[self.pos + 4:self.pos + 4 + n].decode()
            self.pos += 4 + n + 1
            return value
        if ch == "g":
            n = self.buf[self.pos]
            value = self.buf[self.pos + 1:self.pos + 1 + n].decode()
            self.pos += 1 + n + 1
            return value
        if ch == "v":
            sig = self.get("g")
            return (sig, self.get(sig))
        if ch == "a":
            self.align(4)
            (n,) = struct.unpack_from("<I", self.buf, self.pos)
            self.pos += 4
            self.align(_alignment(t[1:]))
            end = self.pos + n
            items = []
            while self.pos < end:
                items.append(self.get(t[1:]))
            return items
        if ch in "({":
            self.align(8)
            return tuple(self.get(sub) for sub in split_signature(t[1:-1]))
        raise ValueError(f"cannot unmarshal type {t!r}")


class Message:
    def __init__(self, kind: int, fields: dict[int, Any], body: list[Any], serial: int = 0,
                 flags: int = 0) -> None:
        self.kind = kind
        self.fields = fields
        self.body = body
        self.serial = serial
        self.flags = flags

    @property
    def member(self) -> str:
        return str(self.fields.get(F_MEMBER, ""))

    def encode(self) -> bytes:
        sig = str(self.fields.get(F_SIGNATURE, ""))
        body = Writer()
        for t, value in zip(split_signature(sig), self.body, strict=True):
            body.put(t, value)
        head = Writer()
        for t, value in (("y", ord("l")), ("y", self.kind), ("y", self.flags), ("y", 1),
                         ("u", len(body.buf)), ("u", self.serial)):
            head.put(t, value)
        head.put("a(yv)", [(code, (_FIELD_TYPES[code], value))
                           for code, value in sorted(self.fields.items())])
        head.align(8)
        return bytes(head.buf + body.buf)

    @classmethod
    def decode(cls, data: bytes) -> Message:
        if data[:1] != b"l":
            raise OcirtError("dbus: big-endian messages are not supported")
        r = Reader(data)
        _, kind, flags, _, body_len, serial = (r.get(t) for t in "yyyyuu")
        fields = {code: value for code, (_, value) in r.get("a(yv)")}
        r.align(8)
        body_start = r.pos
        body = Reader(data[body_start:body_start + body_len])
        values = [body.get(t) for t in split_signature(str(fields.get(F_SIGNATURE, "")))]
        return cls(kind, fields, values, serial, flags)


def bus_address() -> str:
    """The system bus socket path (DBUS_SYSTEM_BUS_ADDRESS=unix:path=... wins)."""
    address = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", "")
    for part in address.split(";"):
        if part.startswith("unix:"):
            for kv in part[5:].split(","):
                key, _, value = kv.partition("=")
                if key == "path":
                    return value
                if key == "abstract":
                    return "\0" + value
    return SYSTEM_BUS


class Connection:
    """One authenticated connection to a bus."""

    def __init__(self, path: str | None = None, timeout: float = 30.0) -> None:
        self.path = path or bus_address()
        self.timeout = timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.serial = 0
        self.pending: list[Message] = []
        self._buf = b""
        try:
            self.sock.connect(self.path)
            self._auth()
            self.unique_name = self.call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                                         "org.freedesktop.DBus", "Hello")[0]
        except OSError as exc:
            self.close()
            raise OcirtError(f"dbus: connect to {self.path.lstrip(chr(0))}: "
                             f"{exc.strerror or exc}") from None

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _auth(self) -> None:
        uid = str(os.geteuid()).encode().hex()
        self.sock.sendall(b"\0AUTH EXTERNAL " + uid.encode() + b"\r\n")
        line = self._line()
        if not line.startswith(b"OK "):
            raise OcirtError(f"dbus: authentication refused: {line.decode(errors='replace')}")
        self.sock.sendall(b"BEGIN\r\n")

    def _line(self) -> bytes:
        while b"\r\n" not in self._buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise OcirtError("dbus: connection closed during authentication")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\r\n")
        return line

    def _read(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise OcirtError("dbus: connection closed")
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def receive(self) -> Message:
        fixed = self._read(16)
        body_len, fields_len = struct.unpack_from("<I4xI", fixed, 4)
        header_len = 16 + fields_len
        header_len += -header_len % 8
        return Message.decode(fixed + self._read(header_len - 16 + body_len))

    def send(self, msg: Message) -> int:
        self.serial += 1
        msg.serial = self.serial
        self.sock.sendall(msg.encode())
        return msg.serial

    def call(self, destination: str, path: str, interface: str, member: str,
             signature: str = "", *args: Any) -> list[Any]:
        fields: dict[int, Any] = {F_PATH: path, F_INTERFACE: interface, F_MEMBER: member,
                                  F_DESTINATION: destination}
        if signature:
            fields[F_SIGNATURE] = signature
        serial = self.send(Message(METHOD_CALL, fields, list(args)))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            msg = self.receive()
            if msg.fields.get(F_REPLY_SERIAL) != serial:
                if msg.kind == SIGNAL:
                    self.pending.append(msg)
                continue
            if msg.kind == ERROR:
                text = msg.body[0] if msg.body and isinstance(msg.body[0], str) else ""
                raise DBusError(str(msg.fields.get(F_ERROR, "error")), text)
            return msg.body
        raise OcirtError(f"dbus: no reply to {interface}.{member} within {self.timeout}s")

    def wait_signal(self, member: str, match: Any, timeout: float) -> Message:
        """The next signal `member` for which `match(msg)` holds (queued ones first)."""
        for msg in list(self.pending):
            self.pending.remove(msg)
            if msg.member == member and match(msg):
                return msg
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                msg = self.receive()
            except TimeoutError:
                break
            finally:
                self.sock.settimeout(self.timeout)
            if msg.kind == SIGNAL and msg.member == member and match(msg):
                return msg
        raise OcirtError(f"dbus: no {member} signal within {timeout}s")
