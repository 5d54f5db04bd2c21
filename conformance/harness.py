"""What a case drives: the runtime under test, bundles, and containers it tracks.

A `Harness` belongs to one case. It hands out container IDs that carry the session's
token (so that cgroups named after them can be recognised as ours), builds bundles from
the session's rootfs template, remembers every container process it saw and, at the
end, force-deletes what is left, kills by PID any tracked process that outlived its
container, and removes leftover cgroups whose names carry the token.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from conformance import cgroupfs, procfs
from conformance.bundle import clone_rootfs, default_config, write_config
from conformance.console import ConsoleReceiver
from conformance.runner import Result, Runtime, wait_for
from conformance.sandbox import Sandbox


@dataclass
class RuntimeInfo:
    """The runtime under test, as the whole session sees it."""

    binary: str
    family: str  # runc, crun, ocirt, ... (from `--version`), else the basename
    version: str
    sandbox: Sandbox | None = None
    token: str = "0"
    template: str = ""
    counter: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def next_name(self, tag: str = "") -> str:
        """A name unique in the session that carries its token (IDs, cgroup names)."""
        return f"conf-{self.token}-{tag}{next(self.counter)}"

    def prefix(self, cwd: str | None = None) -> list[str]:
        return self.sandbox.prefix(cwd) if self.sandbox else []


def identify(binary: str) -> tuple[str, str]:
    """(family, version line) from `<binary> --version`: "runc version 1.1.5" -> runc."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    first = out.splitlines()[0].strip() if out.strip() else ""
    words = first.split()
    if len(words) >= 3 and words[1] == "version":
        return words[0].lower(), first
    return os.path.basename(binary), first or "unknown"


class Container:
    """One container the case created; output of a detached one goes to files."""

    def __init__(self, h: Harness, cid: str, bundle: str, out: str, err: str) -> None:
        self.h, self.cid, self.bundle, self.out_path, self.err_path = h, cid, bundle, out, err
        self.pid = 0

    def state(self) -> dict[str, Any]:
        return self.h.rt.state(self.cid)

    def status(self) -> str | None:
        return self.h.rt.status(self.cid)

    def start(self, check: bool = True) -> Result:
        r = self.h.rt("start", self.cid)
        if check:
            assert r.ok, f"start {self.cid}: {r}"
        return r

    def kill(self, sig: str = "KILL", *more: str, check: bool = True) -> Result:
        r = self.h.rt("kill", *more, self.cid, sig)
        if check:
            assert r.ok, f"kill {self.cid} {sig}: {r}"
        return r

    def delete(self, force: bool = False, check: bool = True) -> Result:
        r = self.h.rt("delete", *(["--force"] if force else []), self.cid)
        if check:
            assert r.ok, f"delete {self.cid}: {r}"
        return r

    def wait_status(self, wanted: str, timeout: float = 10) -> bool:
        return self.h.rt.wait_status(self.cid, wanted, timeout)

    def wait_stopped(self, timeout: float = 10) -> None:
        assert self.wait_status("stopped", timeout), \
            f"{self.cid} not stopped after {timeout}s: {self.status()}"

    def output(self) -> str:
        with open(self.out_path, errors="replace") as f:
            return f.read()

    def errors(self) -> str:
        with open(self.err_path, errors="replace") as f:
            return f.read()

    def wait_output(self, text: str, timeout: float = 10) -> str:
        wait_for(lambda: text in self.output(), timeout)
        out = self.output()
        assert text in out, f"{self.cid}: {text!r} not in output {out!r} / {self.errors()!r}"
        return out

    def stop(self) -> None:
        """Kill and delete (end of a case that is done with a running container)."""
        self.h.rt("kill", self.cid, "KILL")
        self.wait_status("stopped", 10)
        self.delete(check=False)


@dataclass
class Harness:
    info: RuntimeInfo
    tmp: str
    counter: list[int] = field(default_factory=lambda: [0])
    tracked: list[tuple[int, int | None]] = field(default_factory=list)
    closers: list[Callable[[], Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rt = Runtime(self.info.binary, os.path.join(self.tmp, "state"),
                          prefix=self.info.prefix)

    @property
    def family(self) -> str:
        return self.info.family

    # --- names and files -----------------------------------------------------------

    def cid(self) -> str:
        """A fresh container ID carrying the session token."""
        return self.info.next_name()

    def path(self, *names: str) -> str:
        return os.path.join(self.tmp, *names)

    def mkdir(self, *names: str) -> str:
        d = self.path(*names)
        os.makedirs(d, exist_ok=True)
        return d

    def cgroup_name(self, tag: str = "cg") -> str:
        """A relative cgroupsPath below our own cgroup, carrying the session token."""
        return self.info.next_name(tag + "-")

    # --- bundles -------------------------------------------------------------------

    def config(self, args: list[str] | None = None) -> dict[str, Any]:
        return default_config(args)

    def bundle(self, args: list[str] | None = None,
               edit: Callable[[dict[str, Any]], Any] | None = None,
               config: dict[str, Any] | None = None,
               rootfs: Callable[[str], Any] | None = None, public: bool = False) -> str:
        """A fresh bundle: the session's busybox rootfs, runc's default config with
        `args`, changed by `edit(config)`; `rootfs(path)` may change the rootfs.

        `public` puts it where any uid can reach it (pytest's own temporary root is
        0700, which a user-namespaced container root cannot traverse)."""
        self.counter[0] += 1
        if public:
            parent = tempfile.mkdtemp(prefix="conf-bundle-")
            os.chmod(parent, 0o755)
            self.closers.append(lambda: shutil.rmtree(parent, ignore_errors=True))
            directory = os.path.join(parent, "bundle")
        else:
            directory = self.path(f"bundle{self.counter[0]}")
        os.makedirs(directory)
        clone_rootfs(self.info.template, os.path.join(directory, "rootfs"))
        cfg = config if config is not None else default_config(args)
        if edit is not None:
            edit(cfg)
        write_config(directory, cfg)
        if rootfs is not None:
            rootfs(os.path.join(directory, "rootfs"))
        return directory

    # --- containers ----------------------------------------------------------------

    def create(self, bundle: str, cid: str | None = None, check: bool = True,
               extra: tuple[str, ...] = (), pass_fds: tuple[int, ...] = (),
               cwd: str | None = None) -> Container:
        """`create --bundle B --pid-file F ID` with the container's stdio in files."""
        cid = cid or self.cid()
        n = self.counter[0] = self.counter[0] + 1
        out, err = self.path(f"ctr{n}.out"), self.path(f"ctr{n}.err")
        pidfile = self.path(f"ctr{n}.pid")
        c = Container(self, cid, bundle, out, err)
        with open(out, "wb") as fo, open(err, "wb") as fe:
            r = self.rt("create", "--bundle", bundle, "--pid-file", pidfile, *extra, cid,
                        stdout=fo, stderr=fe, pass_fds=pass_fds, cwd=cwd)
        c.result = r  # type: ignore[attr-defined]
        if r.ok:
            c.pid = self._read_pid(pidfile, cid)
        if check:
            assert r.ok, f"create {cid} failed (rc {r.rc}): {c.errors()[-2000:]}"
            assert c.pid > 0, f"create {cid}: no pid in the pid file"
        return c

    def _read_pid(self, pidfile: str, cid: str) -> int:
        pid = 0
        try:
            with open(pidfile) as f:
                pid = int(f.read().strip() or 0)
        except (OSError, ValueError):
            st = self.rt("state", cid)
            if st.ok:
                pid = int(json.loads(st.out).get("pid") or 0)
        if pid:
            self.track(pid)
        return pid

    def start(self, bundle: str, cid: str | None = None) -> Container:
        """create + start, checked."""
        c = self.create(bundle, cid)
        c.start()
        return c

    def run(self, bundle: str, cid: str | None = None, extra: tuple[str, ...] = (),
            timeout: float = 60, pass_fds: tuple[int, ...] = (), cwd: str | None = None,
            input: str | None = None) -> Result:
        """`run` in the foreground: the result carries the container's exit status."""
        return self.rt("run", "--bundle", bundle, *extra, cid or self.cid(), timeout=timeout,
                       pass_fds=pass_fds, cwd=cwd, input=input)

    def output(self, bundle: str, **kw: Any) -> str:
        """The stdout of a foreground `run` that must succeed."""
        r = self.run(bundle, **kw)
        assert r.rc == 0, f"run failed: {r}"
        return r.out

    def console(self) -> ConsoleReceiver:
        """A console-socket receiver on a short path (AF_UNIX paths are limited)."""
        directory = tempfile.mkdtemp(prefix="conf-cs-")
        self.closers.append(lambda: shutil.rmtree(directory, ignore_errors=True))
        receiver = ConsoleReceiver(os.path.join(directory, "sock"))
        self.closers.append(receiver.close)
        return receiver

    def track(self, pid: int) -> None:
        self.tracked.append((pid, procfs.starttime(pid)))

    def in_sandbox(self, argv: list[str]) -> subprocess.CompletedProcess:
        """Run a helper (mount, ...) in the mount namespace the runtime sees."""
        if self.info.sandbox is None:
            return subprocess.run(argv, capture_output=True, text=True)
        return self.info.sandbox.run(argv)

    def shared_mount(self, path: str) -> None:
        """Make `path` a shared bind mount in the runtime's mount namespace (undone at
        the end); only inside the sandbox, never on the host."""
        import pytest

        if self.info.sandbox is None:
            pytest.skip("needs the private mount namespace of the sandbox")
        for argv in (["mount", "--bind", path, path], ["mount", "--make-shared", path]):
            r = self.in_sandbox(argv)
            assert r.returncode == 0, f"{argv}: {r.stderr}"
        self.closers.append(lambda: self.in_sandbox(["umount", "-l", path]))

    def sandbox_mount(self, argv: list[str], target: str) -> None:
        """Run a `mount` in the runtime's mount namespace, unmounted at the end."""
        import pytest

        if self.info.sandbox is None:
            pytest.skip("needs the private mount namespace of the sandbox")
        r = self.in_sandbox(argv)
        assert r.returncode == 0, f"{argv}: {r.stderr}"
        self.closers.append(lambda: self.in_sandbox(["umount", "-l", target]))

    @contextmanager
    def running(self, bundle: str, cid: str | None = None) -> Iterator[Container]:
        c = self.start(bundle, cid)
        try:
            yield c
        finally:
            c.stop()

    # --- the end of a case ---------------------------------------------------------

    def cleanup(self) -> list[str]:
        """Remove whatever the case left; returns what had to be removed by force."""
        leftovers = []
        ids = self.rt.ids()
        for cid in ids:
            # kill, then delete: `delete --force` alone polls slowly in some runtimes
            if self.rt.status(cid) in ("created", "running"):
                self.rt("kill", cid, "KILL")
        for cid in ids:
            leftovers.append(f"container {cid}")
            self.rt.wait_status(cid, "stopped", 5)
            self.rt("delete", "--force", cid)
        for pid, start in self.tracked:
            if procfs.alive(pid) and procfs.starttime(pid) == start:
                leftovers.append(f"process {pid}")
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                procfs.wait_gone(pid, 5)
        leftovers += remove_session_cgroups(self.info.token, wait=bool(leftovers))
        for close in reversed(self.closers):
            close()
        return leftovers


def session_cgroup_dirs(token: str) -> list[str]:
    """Cgroup directories whose names carry `token` directly below our own cgroups, or
    on a unified host below our cgroup's parent (where relative paths go there)."""
    found = []
    own = cgroupfs.proc_cgroups()
    bases = [cgroupfs.host_dir(h, own[h.key]) for h in cgroupfs.hierarchies() if h.key in own]
    if cgroupfs.is_unified():
        bases += [os.path.dirname(b) for b in bases if not os.path.ismount(b)]
    for base in bases:
        try:
            names = os.listdir(base)
        except OSError:
            continue
        found += [os.path.join(base, n) for n in names
                  if f"conf-{token}-" in n and os.path.isdir(os.path.join(base, n))]
    return found


def remove_session_cgroups(token: str, wait: bool = False) -> list[str]:
    """rmdir the suite's own leftover cgroups; returns the ones that were there."""
    found = session_cgroup_dirs(token)
    for d in found:
        cgroupfs.remove_tree(d, timeout=5 if wait else 1)
    return [f"cgroup {d}" for d in found]
