"""hooks: when each kind runs, in which namespace, with which input, and what a failing
one does to the lifecycle.

Every hook appends its name to one log and saves its stdin, argv, environment and mount
namespace in a directory that is bind-mounted at /hooklog in the container, so hooks
running on the host and those running inside the container write to the same place.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from conformance import procfs
from conformance.cases import case, deviation, needs
from conformance.runner import wait_for

pytestmark = [pytest.mark.root, needs("hooks")]

RUNTIME_NS_KINDS = ("prestart", "createRuntime", "poststart", "poststop")
CONTAINER_NS_KINDS = ("createContainer", "startContainer")
ALL_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart",
             "poststop")
HOOK_ENV = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "CONFORMANCE_HOOK=yes"]


class Hooks:
    """A log directory plus hook entries that write into it."""

    def __init__(self, h):
        self.h = h
        self.dir = h.mkdir("hooklog")
        os.chmod(self.dir, 0o777)

    def where(self, kind):
        """The log directory as the hook sees it (inside the container: /hooklog)."""
        return "/hooklog" if kind == "startContainer" else self.dir

    def entry(self, kind, name=None, script="", **extra):
        name = name or kind
        d = self.where(kind)
        # In a createContainer hook $$ is useless: it runs in the container's pid namespace
        # while /proc is still the runtime's; the parent of a subshell's `cut` is a fork
        # of the hook shell, with the same argv and environment, in whatever /proc shows.
        # The trailing `:` keeps busybox from exec'ing the last command in the shell.
        me = "p=$$" if kind == "startContainer" else "p=$(cut -d' ' -f4 /proc/self/stat)"
        body = (f"echo {name} >> {d}/log; cat > {d}/{name}.state; "
                f"readlink /proc/self/ns/mnt > {d}/{name}.mnt; {me}; "
                f"tr '\\0' '\\n' < /proc/$p/environ > {d}/{name}.env; "
                f"tr '\\0' '\\n' < /proc/$p/cmdline > {d}/{name}.argv; {script or ':'}; :")
        return {"path": "/bin/sh", "args": [self.argv0(kind, name), "-c", body, "x0", "x1"],
                "env": list(HOOK_ENV), **extra}

    @staticmethod
    def argv0(kind, name):
        """busybox (the container's /bin/sh) picks its applet by argv[0]."""
        return "sh" if kind == "startContainer" else f"hook-{name}"

    def edit(self, hooks):
        def apply(cfg):
            cfg["hooks"] = hooks
            cfg["mounts"].append({"destination": "/hooklog", "type": "bind",
                                  "source": self.dir, "options": ["rbind", "rw"]})
            cfg["annotations"] = {"org.conformance.hooks": "on"}
        return apply

    def log(self):
        try:
            with open(os.path.join(self.dir, "log")) as f:
                return f.read().split()
        except FileNotFoundError:
            return []

    def read(self, name, what):
        with open(os.path.join(self.dir, f"{name}.{what}")) as f:
            return f.read()

    def state(self, name):
        return json.loads(self.read(name, "state"))


def _all_hooks(hk, fail=None, **extra_by_kind):
    hooks = {}
    for kind in ALL_KINDS:
        script = "exit 7" if kind == fail else ""
        hooks[kind] = [hk.entry(kind, script=script, **extra_by_kind.get(kind, {}))]
    return hooks


@case("HK-01", "config.md#posix-platform-hooks", "MUST")
def test_create_hooks_order(h):
    """create runs prestart, createRuntime, createContainer, in that order, and no other"""
    hk = Hooks(h)
    hooks = {k: v for k, v in _all_hooks(hk).items() if k != "poststart"}
    h.create(h.bundle(["sleep", "1000"], edit=hk.edit(hooks)))
    assert hk.log() == ["prestart", "createRuntime", "createContainer"]


@case("HK-14", "config.md#startContainer-hooks", "MUST")
def test_start_container_before_program(h):
    """startContainer runs at start, before the user program"""
    hk = Hooks(h)
    program = ["sh", "-c", "echo program >> /hooklog/log; exec sleep 1000"]
    c = h.create(h.bundle(program, edit=hk.edit({"startContainer": [
        hk.entry("startContainer")]})))
    assert hk.log() == []
    c.start()
    assert wait_for(lambda: "program" in hk.log(), 5), hk.log()
    assert hk.log() == ["startContainer", "program"]


@deviation("runc", "runc 1.1.5 runs poststart hooks at the end of create, before start "
           "(libcontainer's Start runs them once the init process exists)")
@case("HK-15", "config.md#poststart", "MUST")
def test_poststart_at_start(h):
    """poststart runs during start, after the user program was started, not at create"""
    hk = Hooks(h)
    program = ["sh", "-c", "echo program >> /hooklog/log; exec sleep 1000"]
    c = h.create(h.bundle(program, edit=hk.edit({"poststart": [hk.entry("poststart")]})))
    assert hk.log() == [], "poststart ran during create"
    c.start()
    assert "poststart" in hk.log(), "poststart had not run when start returned"
    assert procfs.alive(c.pid)


@case("HK-16", "config.md#poststop", "MUST")
def test_poststop_at_delete(h):
    """poststop runs at delete, not when the container stops"""
    hk = Hooks(h)
    c = h.start(h.bundle(["true"], edit=hk.edit({"poststop": [hk.entry("poststop")]})))
    c.wait_stopped()
    time.sleep(0.2)
    assert hk.log() == []
    c.delete()
    assert hk.log() == ["poststop"]


@case("HK-02", "config.md#posix-platform-hooks", "MUST")
def test_hooks_listed_order(h):
    """several hooks of one kind run in the listed order"""
    hk = Hooks(h)
    hooks = {"createRuntime": [hk.entry("createRuntime", name=n) for n in ("c", "a", "b")]}
    h.create(h.bundle(["sleep", "1000"], edit=hk.edit(hooks)))
    assert hk.log() == ["c", "a", "b"]


def _run_all(h, hk):
    c = h.create(h.bundle(["sleep", "1000"], edit=hk.edit(_all_hooks(hk))))
    c.start()
    assert wait_for(lambda: "poststart" in hk.log(), 5), hk.log()
    c.kill("KILL")
    c.wait_stopped()
    c.delete()
    return c


@pytest.mark.parametrize("kind", [
    "prestart", "createRuntime",
    pytest.param("createContainer", marks=deviation(
        "crun", "crun 1.8.1 passes pid 0 to createContainer hooks")),
    pytest.param("startContainer", marks=deviation(
        "crun", "crun 1.8.1 passes bundle \"/\" to startContainer hooks")),
    "poststart", "poststop"])
@case("HK-03", "config.md#posix-platform-hooks state", "MUST")
def test_hook_stdin_state(h, kind):
    """each hook gets the container state on stdin (id, bundle, pid, annotations)"""
    hk = Hooks(h)
    c = _run_all(h, hk)
    st = hk.state(kind)
    assert st["id"] == c.cid and st["bundle"] == c.bundle
    assert isinstance(st.get("ociVersion"), str) and st["ociVersion"]
    assert st.get("annotations") == {"org.conformance.hooks": "on"}
    if kind in CONTAINER_NS_KINDS:
        assert st.get("pid") == 1, "in the container namespace the pid is the container's view"
    elif kind != "poststop":
        assert st.get("pid") == c.pid, st


@pytest.mark.parametrize("kind", ALL_KINDS)
@case("HK-04", "config.md#posix-platform-hooks args/env", "MUST")
def test_hook_args_env(h, kind):
    """a hook gets exactly its args (args[0] as argv[0]) and its env"""
    hk = Hooks(h)
    _run_all(h, hk)
    argv = hk.read(kind, "argv").split("\n")
    assert argv[0] == Hooks.argv0(kind, kind) and argv[3:5] == ["x0", "x1"], argv
    assert sorted(e for e in hk.read(kind, "env").split("\n") if e) == sorted(HOOK_ENV)


@pytest.mark.parametrize("kind", ALL_KINDS)
@case("HK-05", "config.md#posix-platform-hooks namespaces", "MUST")
def test_hook_namespace(h, kind):
    """prestart, createRuntime, poststart, poststop run in the runtime's mount namespace;
    createContainer and startContainer in the container's"""
    hk = Hooks(h)
    c = h.create(h.bundle(["sleep", "1000"], edit=hk.edit(_all_hooks(hk))))
    container_mnt = procfs.ns(c.pid, "mnt")
    c.start()
    assert wait_for(lambda: "poststart" in hk.log(), 5), hk.log()
    c.kill("KILL")
    c.wait_stopped()
    c.delete()
    sb = h.info.sandbox
    runtime_mnt = procfs.ns(sb.pid if sb else "self", "mnt")
    seen = hk.read(kind, "mnt").strip()
    assert seen == (container_mnt if kind in CONTAINER_NS_KINDS else runtime_mnt), kind


@case("HK-06", "config.md#startContainer-hooks", "MUST")
def test_start_container_path_in_container(h):
    """startContainer's path resolves in the container, createRuntime's on the host"""
    hk = Hooks(h)
    host_script = os.path.join(hk.dir, "host-only-hook")
    with open(host_script, "w") as f:
        f.write(f"#!/bin/sh\necho host-hook >> {hk.dir}/log\n")
    os.chmod(host_script, 0o755)

    def rootfs(path):
        with open(os.path.join(path, "in-rootfs-hook"), "w") as f:
            f.write("#!/bin/sh\necho rootfs-hook >> /hooklog/log\n")
        os.chmod(os.path.join(path, "in-rootfs-hook"), 0o755)
    hooks = {"createRuntime": [{"path": host_script}],
             "startContainer": [{"path": "/in-rootfs-hook"}]}
    c = h.create(h.bundle(["true"], edit=hk.edit(hooks), rootfs=rootfs))
    c.start()
    c.wait_stopped()
    assert hk.log() == ["host-hook", "rootfs-hook"]


@pytest.mark.parametrize("kind", ["prestart", "createRuntime", "createContainer"])
@case("HK-07", "runtime.md#lifecycle steps 3-5", "MUST")
def test_create_hook_failure(h, kind):
    """a failing create-time hook fails create: nothing remains, later hooks do not run"""
    hk = Hooks(h)
    b = h.bundle(["sh", "-c", "echo program >> /hooklog/log"],
                 edit=hk.edit(_all_hooks(hk, fail=kind)))
    c = h.create(b, check=False)
    assert c.result.rc != 0
    log = hk.log()
    assert kind in log and log.index(kind) == ALL_KINDS.index(kind), log
    later = [k for k in ALL_KINDS[ALL_KINDS.index(kind) + 1:] if k != "poststop"]
    assert not set(later) & set(log) and "program" not in log, log
    assert h.rt("state", c.cid).rc != 0 and h.rt.ids() == []


@deviation("crun", "crun 1.8.1 does not run poststop hooks when create fails")
@case("HK-08", "runtime.md#lifecycle steps 3, 12-13", "MUST")
def test_poststop_after_failed_create(h):
    """after a failing prestart hook the container is destroyed and poststop hooks run"""
    hk = Hooks(h)
    c = h.create(h.bundle(["true"], edit=hk.edit(_all_hooks(hk, fail="prestart"))),
                 check=False)
    assert c.result.rc != 0
    assert wait_for(lambda: "poststop" in hk.log(), 3), hk.log()


@deviation("runc", "runc 1.1.5's start returns 0: the hook fails in the init after start "
           "has returned (the container does stop and the program does not run)")
@deviation("crun", "crun 1.8.1's start returns 0: the hook fails in the init after start "
           "has returned (the container does stop and the program does not run)")
@case("HK-09", "runtime.md#lifecycle step 7", "MUST")
def test_start_container_hook_failure(h):
    """a failing startContainer hook fails start, stops the container, skips the program"""
    hk = Hooks(h)
    program = ["sh", "-c", "echo program >> /hooklog/log; exec sleep 1000"]
    c = h.create(h.bundle(program, edit=hk.edit(_all_hooks(hk, fail="startContainer"))))
    r = c.start(check=False)
    assert wait_for(lambda: c.status() in (None, "stopped"), 5), c.status()
    assert "program" not in hk.log(), hk.log()
    assert r.rc != 0, "start reported success"


@deviation("runc", "runc 1.1.5 runs poststart hooks during create, so create fails instead")
@deviation("crun", "crun 1.8.1 only warns about a failing poststart hook (runtime-spec "
           "v1.2.0 said so; v1.3.0 made it an error)")
@case("HK-10", "runtime.md#lifecycle step 9 (runtime-spec v1.3.0)", "MUST")
def test_poststart_hook_failure(h):
    """a failing poststart hook fails start and stops the container (runc's behaviour,
    adopted by runtime-spec v1.3.0; v1.2.0 asked for a warning only)"""
    hk = Hooks(h)
    c = h.create(h.bundle(["sleep", "1000"], edit=hk.edit(_all_hooks(hk, fail="poststart"))))
    assert c.start(check=False).rc != 0
    assert wait_for(lambda: c.status() in (None, "stopped"), 5), c.status()
    assert procfs.wait_gone(c.pid, 5)


@deviation("runc", "runc 1.1.5 stops at the failing poststop hook and delete exits 1")
@case("HK-11", "runtime.md#lifecycle step 13", "MUST")
def test_poststop_hook_failure(h):
    """a failing poststop hook is only a warning: delete succeeds, later hooks still run"""
    hk = Hooks(h)
    hooks = {"poststop": [hk.entry("poststop", name="first", script="exit 7"),
                          hk.entry("poststop", name="second")]}
    c = h.start(h.bundle(["true"], edit=hk.edit(hooks)))
    c.wait_stopped()
    r = c.delete(check=False)
    assert hk.log() == ["first", "second"]
    assert r.rc == 0, r
    assert h.rt("state", c.cid).rc != 0


@case("HK-12", "config.md#posix-platform-hooks timeout", "MUST")
def test_hook_timeout(h):
    """a hook running past its timeout is aborted and create fails"""
    hk = Hooks(h)
    hooks = {"createRuntime": [hk.entry("createRuntime", script="exec sleep 30", timeout=1)]}
    start = time.monotonic()
    c = h.create(h.bundle(["true"], edit=hk.edit(hooks)), check=False)
    took = time.monotonic() - start
    assert c.result.rc != 0
    assert took < 15, f"create took {took:.1f}s with a 1s hook timeout"
    assert h.rt.ids() == []


@case("HK-13", "config.md#posix-platform-hooks path", "MUST")
def test_missing_hook_fails(h):
    """a hook whose path does not exist fails create"""
    hk = Hooks(h)
    hooks = {"createRuntime": [{"path": h.path("no-such-hook")}]}
    c = h.create(h.bundle(["true"], edit=hk.edit(hooks)), check=False)
    assert c.result.rc != 0
    assert h.rt.ids() == []
