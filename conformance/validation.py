"""The opencontainers/runtime-tools validation programs, run against a runtime, folded
into the report as the area "validation".

The programs are not built here. `bindir` holds them as oci-validate takes them:
`runtimetest` (static, it runs inside the containers), the test programs as NAME.t (or
NAME inside t/), optionally `rootfs-amd64.tar.gz` (else one is made from busybox-static).

Each program runs as the child of a bash that is pid 1 of fresh pid, mount and cgroup
namespaces (so everything it starts dies with it), with every cgroup hierarchy mounted
again from inside the cgroup namespace (absolute cgroupsPath values such as /cgrouptest
land below our own cgroup), a private /run, and TMPDIR in a per-program directory. Cgroup
directories that appear meanwhile under names those programs use (cgrouptest, testdir,
or a UUID component) are removed afterwards; nothing else is touched.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from typing import Any

from conformance import cgroupfs
from conformance.bundle import make_rootfs
from conformance.sandbox import propagation_option, setup_lines

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
SUITE_NAMES = ("cgrouptest", "testdir")
TAP_LINE = re.compile(r"^(not ok|ok)\b(.*)$")


def programs(bindir: str) -> dict[str, str]:
    """{test name: path} for NAME.t files and t/NAME files in `bindir`."""
    found = {}
    for name in sorted(os.listdir(bindir)):
        path = os.path.join(bindir, name)
        if name.endswith(".t") and os.access(path, os.X_OK):
            found[name[:-2]] = path
    tdir = os.path.join(bindir, "t")
    if os.path.isdir(tdir):
        for name in sorted(os.listdir(tdir)):
            path = os.path.join(tdir, name)
            if os.access(path, os.X_OK) and not os.path.isdir(path):
                found.setdefault(name, path)
    return found


def workdir(bindir: str, names: dict[str, str]) -> str:
    """A scratch directory with links to the programs, runtimetest and a rootfs tarball
    (the programs expect them in their working directory)."""
    if not os.access(os.path.join(bindir, "runtimetest"), os.X_OK):
        raise RuntimeError(f"{bindir} has no executable runtimetest")
    wd = tempfile.mkdtemp(prefix="conf-validation-")
    os.chmod(wd, 0o755)
    for extra in ("runtimetest", "oci-runtime-tool"):
        if os.path.exists(os.path.join(bindir, extra)):  # copied into bundles: no links
            shutil.copy2(os.path.join(bindir, extra), os.path.join(wd, extra))
    for name, path in names.items():
        os.symlink(path, os.path.join(wd, name + ".t"))
    tarball = os.path.join(bindir, "rootfs-amd64.tar.gz")
    if os.path.exists(tarball):
        os.symlink(tarball, os.path.join(wd, "rootfs-amd64.tar.gz"))
    else:
        _busybox_tarball(os.path.join(wd, "rootfs-amd64.tar.gz"))
    return wd


def _busybox_tarball(out: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = make_rootfs(os.path.join(tmp, "rootfs"))
        with tarfile.open(out, "w:gz") as tar:
            for entry in sorted(os.listdir(rootfs)):
                tar.add(os.path.join(rootfs, entry), arcname=entry)


def parse_tap(text: str) -> dict[str, Any]:
    plan, passed, failed, skipped, failures = None, 0, 0, 0, []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("1..") and plan is None:
            digits = re.match(r"1\.\.(\d+)", line)
            plan = int(digits.group(1)) if digits else None
            continue
        m = TAP_LINE.match(line)
        if not m:
            continue
        directive = m.group(2).lower()
        if "# skip" in directive or "# todo" in directive:
            skipped += 1
        elif m.group(1) == "ok":
            passed += 1
        else:
            failed += 1
            failures.append(line[:200])
    return {"plan": plan, "passed": passed, "failed": failed, "skipped": skipped,
            "failures": failures}


def _own_dirs() -> list[str]:
    """Our own cgroup in every hierarchy, cgroup2 included (a runtime may create there)."""
    own = cgroupfs.proc_cgroups()
    return [cgroupfs.host_dir(h, own[h.key]) for h in cgroupfs.hierarchies() if h.key in own]


def _snapshot() -> set[str]:
    found = set()
    for base in _own_dirs():
        for top, dirs, _ in os.walk(base):
            found.update(os.path.join(top, d) for d in dirs)
    return found


def _ours(base: str, path: str) -> str | None:
    """The topmost directory of `path` below `base` that the validation suite names."""
    parts = os.path.relpath(path, base).split(os.sep)
    for i, part in enumerate(parts):
        if (i == 0 and part in SUITE_NAMES) or UUID.match(part):
            return os.path.join(base, *parts[:i + 1])
    return None


def clean_cgroups(before: set[str]) -> list[str]:
    """Remove cgroups the programs left (new since `before`, under the suite's names)."""
    removed: list[str] = []
    new = sorted(_snapshot() - before, key=len)
    for base in _own_dirs():
        for path in new:
            if not path.startswith(base + os.sep):
                continue
            top = _ours(base, path)
            if top and top not in removed and os.path.isdir(top):
                cgroupfs.remove_tree(top, timeout=5)
                removed.append(top)
    return removed


def run_one(runtime: str, name: str, wd: str, hide_unified: bool,
            timeout: float = 120) -> dict[str, Any]:
    tmp = tempfile.mkdtemp(prefix=f"conf-v-{name}-")
    os.chmod(tmp, 0o755)  # a user-namespaced container root must traverse it
    script = "\n".join([*setup_lines(hide_unified), f"cd {wd}",
                        f'./{name}.t & child=$!', 'wait "$child"'])
    env = dict(os.environ, RUNTIME=runtime, TMPDIR=tmp)
    argv = ["unshare", "--mount", "--cgroup", "--pid", "--fork", "--kill-child",
            "--mount-proc", "--propagation", propagation_option(), "--", "/bin/bash", "-c", script]
    before = _snapshot()
    start = time.monotonic()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL)
        out, err, rc = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else ""
        err, rc = f"timed out after {timeout}s", -1
    duration = time.monotonic() - start
    clean_cgroups(before)
    shutil.rmtree(tmp, ignore_errors=True)
    return _record(name, out, err, rc, duration)


def _record(name: str, out: str, err: str, rc: int, duration: float) -> dict[str, Any]:
    tap = parse_tap(out)
    seen = tap["passed"] + tap["failed"] + tap["skipped"]
    missing = max(0, (tap["plan"] or 0) - seen)
    if rc == 0 and tap["failed"] == 0 and missing == 0:
        outcome, message = "passed", f"{tap['passed']}/{seen} assertions"
    elif seen == 0 and rc != 0:
        outcome, message = "error", _reason(err) or f"exit {rc} before any assertion"
    else:
        outcome = "failed"
        message = "; ".join(tap["failures"][:3]) or (
            f"{missing} planned assertions missing" if missing else f"exit {rc}")
    return {"id": f"RTV-{name}", "area": "validation", "title": f"runtime-tools {name}",
            "spec": f"runtime-tools validation/{name}", "level": "MUST", "nodeid": name,
            "deviation": "", "needs": [], "outcome": outcome, "message": message[:600],
            "details": (out[-3000:] + "\n" + err[-1000:]).strip(),
            "duration": round(duration, 3)}


def _reason(err: str) -> str:
    lines = [ln.strip() for ln in err.splitlines() if ln.strip()]
    for ln in lines:
        if "error" in ln.lower():
            return ln[:300]
    return lines[0][:300] if lines else ""


def run_all(runtime: str, bindir: str, hide_unified: bool, only: list[str] | None = None,
            timeout: float = 120, progress: Any = None) -> list[dict[str, Any]]:
    names = programs(bindir)
    if only:
        names = {n: p for n, p in names.items() if any(re.fullmatch(pat.replace("*", ".*"), n)
                                                        for pat in only)}
    wd = workdir(bindir, names)
    results = []
    try:
        for name in names:
            rec = run_one(runtime, name, wd, hide_unified, timeout)
            if progress:
                progress(f"{rec['outcome'].upper():7} {name}: {rec['message'][:120]}")
            results.append(rec)
    finally:
        shutil.rmtree(wd, ignore_errors=True)
    return results
