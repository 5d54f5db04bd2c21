"""Driving any runc-compatible runtime binary from tests."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import IO, Any


class Result:
    def __init__(self, args: list[str], rc: int, out: str, err: str) -> None:
        self.args, self.rc, self.out, self.err = args, rc, out, err

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def __repr__(self) -> str:
        return f"Result(rc={self.rc}, out={self.out[-300:]!r}, err={self.err[-500:]!r})"


class RuntimeError_(AssertionError):
    pass


class Runtime:
    """A runtime binary with its own `--root` state directory.

    `prefix`, when given, is a callable returning the argv prefix for a working
    directory (the conformance sandbox's `nsenter` line); every invocation goes through it.
    """

    def __init__(self, binary: str, root: str, global_args: list[str] | None = None,
                 prefix: Callable[[str | None], list[str]] | None = None) -> None:
        self.binary = binary
        self.root = root
        self.global_args = list(global_args or [])
        self.prefix = prefix

    @property
    def name(self) -> str:
        return os.path.basename(self.binary)

    def cmd(self, *args: str, cwd: str | None = None) -> list[str]:
        pre = self.prefix(cwd) if self.prefix is not None else []
        return [*pre, self.binary, "--root", self.root, *self.global_args, *args]

    def __call__(self, *args: str, check: bool = False, input: str | None = None,
                 timeout: float = 60, cwd: str | None = None, env: dict[str, str] | None = None,
                 pass_fds: tuple[int, ...] = (), stdout: IO[bytes] | None = None,
                 stderr: IO[bytes] | None = None) -> Result:
        """Run one command; `stdout`/`stderr`, when given, receive the output instead
        (a detached container keeps writing there after the command returns)."""
        argv = self.cmd(*args, cwd=cwd)
        # Files, not pipes: a container inherits the runtime's stdio, so with pipes the
        # caller of `create` would wait for EOF until the container exits.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            proc = subprocess.run(argv, input=input.encode() if input is not None else None,
                                  stdin=None if input is not None else subprocess.DEVNULL,
                                  stdout=stdout or out, stderr=stderr or err, timeout=timeout,
                                  cwd=cwd, env=env, pass_fds=pass_fds)
            out.seek(0)
            err.seek(0)
            result = Result(argv, proc.returncode, out.read().decode(errors="replace"),
                            err.read().decode(errors="replace"))
        if check and proc.returncode != 0:
            raise RuntimeError_(f"{' '.join(argv)} failed: {result}")
        return result

    def state(self, cid: str) -> dict[str, Any]:
        return json.loads(self("state", cid, check=True).out)

    def status(self, cid: str) -> str | None:
        r = self("state", cid)
        return json.loads(r.out)["status"] if r.ok else None

    def wait_status(self, cid: str, wanted: str, timeout: float = 10) -> bool:
        return wait_for(lambda: self.status(cid) == wanted, timeout)

    def ids(self) -> list[str]:
        r = self("list", "-q")
        return r.out.split() if r.ok else []

    def cleanup(self) -> None:
        for cid in self.ids():
            self("delete", "--force", cid)


def wait_for(predicate: Callable[[], bool], timeout: float = 10, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > end:
            return False
        time.sleep(step)
