"""pytest wiring of the conformance suite: which runtime, its sandbox, fixtures, results.

The runtime under test is `--runtime BIN`, else $OCIRT_CONFORMANCE_RUNTIME, else the
repository's .venv/bin/ocirt, else `ocirt` on PATH (so the project's default test run
checks ocirt). It is driven only through its runc-compatible command line; ocirt is
never imported. As root, every runtime command runs inside a private mount + cgroup
namespace (conformance.sandbox); `--no-sandbox` or OCIRT_CONFORMANCE_SANDBOX=0 turns that
off. With --conformance-results FILE (or $OCIRT_CONFORMANCE_RESULTS) every case's
outcome is written there as JSON for `python -m conformance`'s report.
"""

from __future__ import annotations

import os
import platform
import secrets
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest

from conformance import cases
from conformance.bundle import make_rootfs
from conformance.harness import Harness, RuntimeInfo, identify, remove_session_cgroups
from conformance.sandbox import Sandbox, in_chroot

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
IS_ROOT = os.geteuid() == 0
IN_CHROOT = in_chroot()

AREAS = ("lifecycle", "kill", "delete", "process", "terminal", "namespaces", "mounts",
         "hooks", "cgroups", "seccomp", "checkpoint", "errors", "security")


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("conformance", "OCI runtime conformance suite")
    group.addoption("--runtime", default=None,
                    help="runtime binary under test (default: $OCIRT_CONFORMANCE_RUNTIME, "
                         "else the repository's .venv/bin/ocirt, else ocirt on PATH)")
    group.addoption("--conformance-results", default=None,
                    help="write every case's outcome as JSON to this file")
    group.addoption("--no-sandbox", action="store_true", default=False,
                    help="run runtime commands in the host mount and cgroup namespaces")


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "case(id, spec, level): conformance case identity")
    config.addinivalue_line("markers", "deviation(family, why): documented deviation")
    config.addinivalue_line("markers", "needs(*features): features a case exercises")
    config.addinivalue_line("markers", "root: needs root (skipped otherwise)")
    config.addinivalue_line("markers", "slow: long-running (races, many containers)")


def _option(config: Any, name: str) -> Any:
    try:
        return config.getoption(name)
    except ValueError:  # our options are not registered when this conftest loads late
        return None


def runtime_binary(config: Any) -> str:
    chosen = _option(config, "--runtime") or os.environ.get("OCIRT_CONFORMANCE_RUNTIME")
    if not chosen:
        local = os.path.join(REPO, ".venv", "bin", "ocirt")
        chosen = local if os.path.exists(local) else "ocirt"
    found = chosen if os.sep in chosen else shutil.which(chosen)
    if not found or not os.access(found, os.X_OK):
        raise pytest.UsageError(f"conformance: runtime {chosen!r} not found or not executable")
    return os.path.abspath(found)


def _is_case(item: Any) -> bool:
    return str(item.path).startswith(HERE + os.sep)


def _area(item: Any) -> str:
    name = item.path.stem
    return name[5:] if name.startswith("test_") else name


_META: dict[str, dict[str, Any]] = {}
_RESULTS: dict[str, dict[str, Any]] = {}
_FAMILY: list[tuple[str, str, str]] = []


def _family(config: Any) -> tuple[str, str, str]:
    if not _FAMILY:
        binary = runtime_binary(config)
        _FAMILY.append((binary, *identify(binary)))
    return _FAMILY[0]


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    mine = [i for i in items if _is_case(i)]
    if not mine:
        return
    # Without root nothing runs, so no runtime binary is needed either.
    family = _family(config)[1] if IS_ROOT else ""
    seen: dict[str, str] = {}
    for item in mine:
        meta = _case_meta(item, family)
        if meta["id"] in seen and seen[meta["id"]] != item.nodeid.split("[")[0]:
            raise pytest.UsageError(f"conformance: case id {meta['id']} used twice "
                                    f"({seen[meta['id']]} and {item.nodeid})")
        seen.setdefault(meta["id"], item.nodeid.split("[")[0])
        _META[item.nodeid] = meta
        if not IS_ROOT:
            item.add_marker(pytest.mark.skip(reason="conformance cases need root"))
        elif "userns" in meta["needs"] and IN_CHROOT:
            item.add_marker(pytest.mark.skip(reason="the kernel refuses new user namespaces "
                                             "to a process in a chroot"))
        elif meta["deviation"]:
            item.add_marker(pytest.mark.xfail(
                reason=f"documented {family} deviation: {meta['deviation']}", strict=True))


def pytest_deselected(items: list[Any]) -> None:
    for item in items:
        _META.pop(item.nodeid, None)


def _case_meta(item: Any, family: str) -> dict[str, Any]:
    mark = item.get_closest_marker("case")
    if mark is None:
        raise pytest.UsageError(f"conformance: {item.nodeid} has no @case(id, spec, level)")
    cid, spec, level = mark.args
    if hasattr(item, "callspec"):
        cid = f"{cid}[{item.callspec.id}]"
    doc = (getattr(item, "obj", None).__doc__ or "").strip() if hasattr(item, "obj") else ""
    if not doc:
        raise pytest.UsageError(f"conformance: {item.nodeid} needs a docstring (its title)")
    deviation = ""
    for m in item.iter_markers("deviation"):
        if m.args[0] == family:
            deviation = m.args[1]
    needs = sorted({f for m in item.iter_markers("needs") for f in m.args})
    return {"id": cid, "area": _area(item), "title": doc.splitlines()[0].strip(),
            "spec": spec, "level": level, "nodeid": item.nodeid, "deviation": deviation,
            "needs": needs, "outcome": "not run", "message": "", "details": "",
            "duration": 0.0}


def pytest_runtest_logreport(report: Any) -> None:
    meta = _META.get(report.nodeid)
    if meta is None:
        return
    rec = _RESULTS.setdefault(report.nodeid, dict(meta))
    rec["duration"] = round(rec["duration"] + report.duration, 3)
    for key, value in report.user_properties:
        if key == "left-behind":
            rec["left_behind"] = value
    outcome = _outcome(report)
    if outcome is None:
        return
    if report.when == "teardown" and rec["outcome"] in ("failed", "error", "xpassed"):
        return  # keep the first failure
    if report.when == "teardown" and outcome == "error" and rec["outcome"] == "xfailed":
        return
    rec["outcome"] = outcome
    rec["message"], rec["details"] = _messages(report)


def _outcome(report: Any) -> str | None:
    longtext = str(report.longrepr) if report.longrepr else ""
    if report.when == "call":
        if report.passed:
            return "xpassed" if hasattr(report, "wasxfail") else "passed"
        if report.skipped:
            return "xfailed" if hasattr(report, "wasxfail") else "skipped"
        return "xpassed" if longtext.startswith("[XPASS(strict)]") else "failed"
    if report.failed:
        return "error"
    if report.skipped and report.when == "setup":
        return "xfailed" if hasattr(report, "wasxfail") else "skipped"
    return None


def _messages(report: Any) -> tuple[str, str]:
    if report.passed:
        return "", ""
    if hasattr(report, "wasxfail") and report.skipped:
        return report.wasxfail, ""
    lr = report.longrepr
    if isinstance(lr, tuple):  # a skip: (file, line, reason)
        return str(lr[2]).removeprefix("Skipped: "), ""
    crash = getattr(lr, "reprcrash", None)
    message = crash.message if crash is not None else str(lr).strip().splitlines()[-1]
    return message[:600], str(lr)[-4000:]


def pytest_sessionfinish(session: Any, exitstatus: int) -> None:
    path = _option(session.config, "--conformance-results") or \
        os.environ.get("OCIRT_CONFORMANCE_RESULTS")
    if not path or not _META:
        return
    import json

    binary, family, version = _family(session.config) if IS_ROOT else ("", "", "")
    records = [_RESULTS.get(nodeid, meta) for nodeid, meta in _META.items()]
    doc = {"runtime": {"binary": binary, "family": family, "version": version},
           "host": host_facts(session.config),
           "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "spec": cases.SPEC_VERSION, "cases": records}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)


def host_facts(config: Any) -> dict[str, Any]:
    from conformance import cgroupfs

    kinds = {h.fstype for h in cgroupfs.hierarchies()}
    cg = "hybrid" if kinds == {"cgroup", "cgroup2"} else ("v2" if kinds == {"cgroup2"}
                                                           else "v1")
    return {"kernel": platform.release(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "cgroups": cg, "sandbox": _use_sandbox(config)}


def _use_sandbox(config: Any) -> bool:
    if _option(config, "--no-sandbox") or os.environ.get("OCIRT_CONFORMANCE_SANDBOX") == "0":
        return False
    return IS_ROOT


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def runtime_info(request: Any, tmp_path_factory: Any) -> Iterator[RuntimeInfo]:
    binary, family, version = _family(request.config)
    template = make_rootfs(str(tmp_path_factory.mktemp("conformance-rootfs") / "rootfs"))
    info = RuntimeInfo(binary, family, version, token=secrets.token_hex(3), template=template)
    if _use_sandbox(request.config):
        info.sandbox = Sandbox(hide_unified=family == "crun")
        info.sandbox.start()
    try:
        yield info
    finally:
        remove_session_cgroups(info.token, wait=True)
        if info.sandbox:
            info.sandbox.close()


@pytest.fixture
def h(runtime_info: RuntimeInfo, tmp_path: Any, request: Any) -> Iterator[Harness]:
    harness = Harness(runtime_info, str(tmp_path))
    yield harness
    left = harness.cleanup()
    if left:
        request.node.user_properties.append(("left-behind", "; ".join(left)))
