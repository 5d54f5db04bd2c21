"""Just enough of a WebSocket client (RFC 6455) for the CRI streaming server's exec
endpoint, which kubectl reaches through kubelet.

containerd's streaming server speaks the Kubernetes remote-command protocol over SPDY or
WebSocket; the WebSocket form ("v4.channel.k8s.io") is far simpler to speak: every binary
message starts with a channel byte (0 stdin, 1 stdout, 2 stderr, 3 the final status as
JSON, 4 terminal resize as JSON), and the server closes the connection when the command
has ended. The server is on loopback only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import struct
import urllib.parse

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
PROTOCOL = "v4.channel.k8s.io"
STDIN, STDOUT, STDERR, ERROR, RESIZE = range(5)
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class WebSocketError(RuntimeError):
    pass


class Channels:
    """One remote-command session: send stdin and resizes, collect the output streams and
    the status until the server closes."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        u = urllib.parse.urlsplit(url)
        if u.scheme != "http" or u.hostname not in ("127.0.0.1", "::1", "localhost"):
            raise WebSocketError(f"not a loopback http URL: {url}")
        self.sock = socket.create_connection((u.hostname, u.port or 80), timeout=timeout)
        self.buf = b""
        key = base64.b64encode(os.urandom(16)).decode()
        path = u.path + (f"?{u.query}" if u.query else "")
        self.sock.sendall((f"GET {path} HTTP/1.1\r\nHost: {u.netloc}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                           f"Sec-WebSocket-Protocol: {PROTOCOL}\r\n"
                           f"Origin: http://{u.netloc}\r\n\r\n").encode())
        head = self._read_until(b"\r\n\r\n").decode(errors="replace")
        status, *fields = head.split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (f.partition(":") for f in fields if f)}
        accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
        if " 101 " not in status + " " or headers.get("sec-websocket-accept") != accept:
            raise WebSocketError(f"handshake refused: {head.strip()}")
        self.protocol = headers.get("sec-websocket-protocol", "")
        self.output = {STDOUT: b"", STDERR: b""}
        self.status: dict | None = None

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(marker, 1)
        return head

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise WebSocketError("connection closed")
        self.buf += data

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        """A client frame: always masked (RFC 6455 5.3)."""
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        mask = os.urandom(4)
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + body)

    def _recv_message(self) -> tuple[int, bytes] | None:
        """The next data message (fragments joined), answering pings; None at close."""
        parts, first = [], None
        while True:
            b0, b1 = self._read(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._read(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._read(8))
            mask = self._read(4) if b1 & 0x80 else b""
            payload = self._read(n)
            if mask:
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            if opcode == OP_CLOSE:
                return None
            if opcode == OP_PING:
                self._send_frame(OP_PONG, payload)
                continue
            if opcode == OP_PONG:
                continue
            if opcode != OP_CONT:
                first = opcode
            parts.append(payload)
            if b0 & 0x80:
                return first or OP_BINARY, b"".join(parts)

    def send(self, channel: int, data: bytes) -> None:
        self._send_frame(OP_BINARY, bytes([channel]) + data)

    def resize(self, width: int, height: int) -> None:
        self.send(RESIZE, json.dumps({"Width": width, "Height": height}).encode())

    def run(self) -> dict:
        """Read until the server closes; returns the status (channel 3)."""
        while (msg := self._recv_message()) is not None:
            _opcode, data = msg
            if not data:
                continue
            channel, data = data[0], data[1:]
            if channel in self.output:
                self.output[channel] += data
            elif channel == ERROR and data:
                self.status = json.loads(data)
        self.sock.close()
        if self.status is None:
            raise WebSocketError("the server closed without a status")
        return self.status


def exit_code(status: dict) -> int:
    """The command's exit code from a v4 status: 0 on Success, else the ExitCode cause."""
    if status.get("status") == "Success":
        return 0
    for cause in status.get("details", {}).get("causes", []):
        if cause.get("reason") == "ExitCode":
            return int(cause["message"])
    raise WebSocketError(f"no exit code in status {status}")
