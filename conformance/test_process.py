"""process: args, env, cwd, user, umask, capabilities, rlimits, no_new_privs, oom_score_adj,
hostname, the NUMA memory policy; each checked from the host (/proc/<pid>) and, where it
matters, from inside."""

from __future__ import annotations

import os
import resource
import subprocess

import pytest

from conformance import procfs
from conformance.cases import case, deviation, needs
from conformance.runner import wait_for

pytestmark = pytest.mark.root

WAIT = ["sleep", "1000"]


def _running(h, edit, args=WAIT):
    """A started container whose process has exec'd `args` (so /proc shows the program)."""
    c = h.start(h.bundle(args, edit=edit))
    assert wait_for(lambda: procfs.cmdline(c.pid) == args, 5), procfs.cmdline(c.pid)
    return c


def _user(uid, gid, **more):
    def edit(cfg):
        cfg["process"]["user"] = {"uid": uid, "gid": gid, **more}
    return edit


# --- args, env, cwd -----------------------------------------------------------------


@case("PR-01", "config.md#process args", "MUST")
def test_args_exact(h):
    """every argument reaches the program unchanged: spaces, empty, non-ASCII"""
    script = 'for a in "$0" "$@"; do echo "[$a]"; done'
    out = h.output(h.bundle(["sh", "-c", script, "zero", "a b", "", "ünï", "--flag=x"]))
    assert out.splitlines() == ["[zero]", "[a b]", "[]", "[ünï]", "[--flag=x]"]


@case("PR-02", "config.md#process args", "MUST")
def test_args0_path_lookup(h):
    """args[0] without a slash is looked up in process.env's PATH (execvp semantics)"""
    def rootfs(path):
        os.makedirs(os.path.join(path, "opt/custom"))
        tool = os.path.join(path, "opt/custom/conformance-tool")
        with open(tool, "w") as f:
            f.write("#!/bin/sh\necho custom-tool-ran\n")
        os.chmod(tool, 0o755)

    def edit(cfg):
        cfg["process"]["env"] = ["PATH=/opt/custom:/bin"]
    b = h.bundle(["conformance-tool"], edit=edit, rootfs=rootfs)
    assert "custom-tool-ran" in h.output(b)


@case("PR-03", "config.md#process args", "MUST")
def test_args0_absolute(h):
    """an absolute args[0] runs that file"""
    assert h.output(h.bundle(["/bin/echo", "absolute-ok"])).strip() == "absolute-ok"


@case("PR-04", "config.md#process env", "MUST")
def test_env_exact(h):
    """the environment is process.env (plus runc's HOME), nothing of the runtime's own"""
    env = ["PATH=/bin", "ONE=1", "SPACED=a b c", "EMPTY=", "EQ=x=y"]

    def edit(cfg):
        cfg["process"]["env"] = env
    c = _running(h, edit)
    seen = procfs.environ(c.pid)
    extra = [e for e in seen if e not in env]
    assert all(e in seen for e in env), seen
    assert all(e.startswith("HOME=") for e in extra), f"unexpected variables: {extra}"


@case("PR-05", "config.md#process env", "MUST")
def test_env_no_leak(h):
    """variables of the runtime's caller do not reach the container"""
    b = h.bundle(["env"])
    env = dict(os.environ, CONFORMANCE_LEAK_CHECK="leaked")
    r = h.rt("run", "--bundle", b, h.cid(), env=env)
    assert r.rc == 0, r
    assert "CONFORMANCE_LEAK_CHECK" not in r.out


@case("PR-06", "runc: HOME", "RUNC")
def test_home_from_passwd(h):
    """without HOME in env, HOME is the user's home from /etc/passwd"""
    out = h.output(h.bundle(["sh", "-c", "echo home=$HOME"], edit=_user(1000, 1000)))
    assert "home=/home/user" in out


@case("PR-07", "runc: HOME", "RUNC")
def test_home_kept(h):
    """a HOME given in env is kept"""
    def edit(cfg):
        cfg["process"]["env"] = ["PATH=/bin", "HOME=/custom"]
    assert "home=/custom" in h.output(h.bundle(["sh", "-c", "echo home=$HOME"], edit=edit))


@case("PR-08", "config.md#process cwd", "MUST")
def test_cwd(h):
    """the program starts in process.cwd (inside: pwd; host: /proc/<pid>/cwd)"""
    def edit(cfg):
        cfg["process"]["cwd"] = "/etc"
    assert h.output(h.bundle(["pwd"], edit=edit)).strip() == "/etc"
    c = _running(h, edit)
    assert os.path.samestat(os.stat(f"/proc/{c.pid}/cwd"), os.stat(f"/proc/{c.pid}/root/etc"))


@case("PR-09", "runc: cwd", "RUNC")
def test_cwd_created(h):
    """a missing cwd is created inside the rootfs"""
    def edit(cfg):
        cfg["process"]["cwd"] = "/made/by/runtime"
    b = h.bundle(["pwd"], edit=edit)
    assert h.output(b).strip() == "/made/by/runtime"
    assert os.path.isdir(os.path.join(b, "rootfs/made/by/runtime"))


# --- user, groups, umask ------------------------------------------------------------


@case("PR-10", "config.md#posix-platform-user", "MUST")
def test_uid_gid(h):
    """the process runs with user.uid and user.gid (real, effective, saved, fs)"""
    c = _running(h, _user(1000, 1000))
    st = procfs.status(c.pid)
    assert st["Uid"].split() == ["1000"] * 4 and st["Gid"].split() == ["1000"] * 4
    out = h.output(h.bundle(["id"], edit=_user(1000, 1000)))
    assert "uid=1000(user) gid=1000(user)" in out


@case("PR-11", "config.md#posix-platform-user", "MUST")
def test_additional_gids(h):
    """supplementary groups are exactly additionalGids"""
    c = _running(h, _user(1000, 1000, additionalGids=[5, 1]))
    assert sorted(procfs.status(c.pid)["Groups"].split()) == ["1", "5"]


@case("PR-12", "config.md#posix-platform-user", "MUST")
def test_no_host_groups(h):
    """without additionalGids no supplementary group of the runtime's caller remains"""
    c = _running(h, _user(1000, 1000))
    assert procfs.status(c.pid)["Groups"].split() == []


@case("PR-13", "config.md#posix-platform-user umask", "MUST")
def test_umask(h):
    """user.umask is the process's umask"""
    c = _running(h, _user(0, 0, umask=0o027))
    assert procfs.status(c.pid)["Umask"] == "0027"
    out = h.output(h.bundle(["sh", "-c", "touch /tmp/f; stat -c %a /tmp/f"],
                            edit=_user(0, 0, umask=0o077)))
    assert out.strip() == "600"


@case("PR-14", "runc: umask", "RUNC")
def test_default_umask(h):
    """without user.umask the umask is 0022"""
    c = _running(h, None)
    assert procfs.status(c.pid)["Umask"] == "0022"


# --- capabilities -------------------------------------------------------------------


def _caps(**sets):
    def edit(cfg):
        cfg["process"]["capabilities"] = {k: sorted(v) for k, v in sets.items()}
    return edit


@case("PR-15", "config.md#linux-process capabilities", "MUST")
def test_caps_root(h):
    """for uid 0 the bounding, effective, permitted and inheritable sets are the config's"""
    s = {"CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW", "CAP_SETUID"}
    c = _running(h, _caps(bounding=s, effective=s, permitted=s, inheritable={"CAP_KILL"}))
    got = procfs.caps(c.pid)
    assert got["bounding"] == s and got["effective"] == s and got["permitted"] == s
    assert got["inheritable"] == {"CAP_KILL"}


@case("PR-16", "config.md#linux-process capabilities", "MUST")
def test_caps_ambient_non_root(h):
    """for a non-root user the ambient set carries the capabilities across execve"""
    s = {"CAP_NET_BIND_SERVICE", "CAP_KILL"}
    edit = _caps(bounding=s | {"CAP_CHOWN"}, effective=s, permitted=s, inheritable=s,
                 ambient=s)

    def both(cfg):
        edit(cfg)
        _user(1000, 1000)(cfg)
    c = _running(h, both)
    got = procfs.caps(c.pid)
    assert got["ambient"] == s and got["effective"] == s and got["permitted"] == s
    assert got["bounding"] == s | {"CAP_CHOWN"}


@case("PR-17", "config.md#linux-process capabilities", "MUST")
def test_caps_non_root_none(h):
    """a non-root user without ambient capabilities ends with none effective"""
    s = {"CAP_NET_BIND_SERVICE", "CAP_KILL"}

    def edit(cfg):
        _caps(bounding=s, effective=s, permitted=s)(cfg)
        _user(1000, 1000)(cfg)
    got = procfs.caps(_running(h, edit).pid)
    assert got["effective"] == set() and got["permitted"] == set() and got["ambient"] == set()


@case("PR-18", "config.md#linux-process capabilities", "MUST")
def test_caps_enforced(h):
    """dropped capabilities are really gone: mknod fails without CAP_MKNOD"""
    s = {"CAP_CHOWN"}
    b = h.bundle(["sh", "-c", "chown 1000 /tmp && echo chown-ok; "
                  "mknod /tmp/null c 1 3 && echo mknod-ok; true"],
                 edit=_caps(bounding=s, effective=s, permitted=s))
    out = h.output(b)
    assert "chown-ok" in out and "mknod-ok" not in out


@case("PR-19", "config.md#linux-process capabilities", "SHOULD")
def test_caps_unknown_tolerated(h):
    """an unknown capability name is warned about, not fatal; the others are granted"""
    s = ["CAP_KILL", "CAP_CONFORMANCE_UNKNOWN"]
    b = h.bundle(["sh", "-c", "grep Cap /proc/self/status"],
                 edit=_caps(bounding=s, effective=s, permitted=s))
    r = h.run(b)
    assert r.rc == 0, r
    assert procfs.caps_from_status_text(r.out)["effective"] == {"CAP_KILL"}


@deviation("runc", "runc 1.1.5 fails with 'unable to apply caps: operation not permitted'")
@deviation("crun", "crun 1.8.1 fails with 'capset: Operation not permitted'")
@case("PR-20", "config.md#linux-process capabilities", "SHOULD")
def test_caps_ungrantable_tolerated(h):
    """a capability outside the runtime's own bounding set does not make create fail"""
    missing = _missing_caps()
    if not missing:
        pytest.skip("the runtime's bounding set is full here")
    s = {"CAP_KILL", missing[0]}
    r = h.run(h.bundle(["sh", "-c", "grep CapEff /proc/self/status"],
                       edit=_caps(bounding=s, effective=s, permitted=s)))
    assert r.rc == 0, r
    assert "CAP_KILL" in procfs.caps_from_status_text(r.out)["effective"]


def _missing_caps():
    have = procfs.caps("self")["bounding"]
    return [c for c in procfs.CAP_NAMES[:procfs.last_cap() + 1] if c not in have]


# --- rlimits ------------------------------------------------------------------------


@case("PR-21", "config.md#posix-process rlimits", "MUST")
def test_rlimits(h):
    """each rlimit's soft and hard values are set (host: /proc/<pid>/limits)"""
    # Raising a hard limit needs CAP_SYS_RESOURCE, so stay below the caller's own.
    wanted = {name: _below_own(name, hard) for name, hard in
              (("RLIMIT_NOFILE", 2048), ("RLIMIT_CORE", 4096), ("RLIMIT_MSGQUEUE", 8192),
               ("RLIMIT_STACK", 16 << 20))}

    def edit(cfg):
        cfg["process"]["rlimits"] = [{"type": t, "soft": s, "hard": hd}
                                     for t, (s, hd) in wanted.items()]
    got = procfs.limits(_running(h, edit).pid)
    for name, value in wanted.items():
        assert got[name] == value, name
    out = h.output(h.bundle(["sh", "-c", "ulimit -n; ulimit -Hn"], edit=edit))
    assert out.split() == [str(v) for v in wanted["RLIMIT_NOFILE"]]


def _below_own(name, hard):
    own = resource.getrlimit(getattr(resource, name))[1]
    hard = hard if own == resource.RLIM_INFINITY else min(hard, own)
    return hard // 2, hard


@case("PR-22", "config.md#posix-process rlimits", "MUST")
def test_rlimit_unapplicable_fails(h):
    """a hard limit the runtime cannot raise to is an error, not silently lower"""
    if "CAP_SYS_RESOURCE" in procfs.caps("self")["effective"]:
        pytest.skip("the runtime could raise the hard limit here")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no finite hard RLIMIT_NOFILE to exceed")

    def edit(cfg):
        cfg["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": hard + 1000,
                                      "hard": hard + 1000}]
    r = h.run(h.bundle(["true"], edit=edit))
    assert r.rc != 0, r
    assert h.rt.ids() == []


@case("PR-23", "config.md#posix-process rlimits", "MUST")
def test_rlimit_unknown_type_fails(h):
    """an rlimit type that maps to no kernel limit is an error"""
    def edit(cfg):
        cfg["process"]["rlimits"].append({"type": "RLIMIT_CONFORMANCE", "soft": 1, "hard": 1})
    assert h.run(h.bundle(["true"], edit=edit)).rc != 0
    assert h.rt.ids() == []


@deviation("runc", "runc 1.1.5 accepts duplicated rlimits (the last one wins)")
@deviation("crun", "crun 1.8.1 accepts duplicated rlimits (the last one wins)")
@case("PR-24", "config.md#posix-process rlimits", "MUST")
def test_rlimit_duplicate_fails(h):
    """two rlimits of the same type are an error"""
    def edit(cfg):
        cfg["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 512},
                                     {"type": "RLIMIT_NOFILE", "soft": 256, "hard": 256}]
    assert h.run(h.bundle(["true"], edit=edit)).rc != 0
    assert h.rt.ids() == []


# --- no_new_privs, oom_score_adj ------------------------------------------------------


@pytest.mark.parametrize("value", [True, False])
@case("PR-25", "config.md#linux-process noNewPrivileges", "MUST")
def test_no_new_privileges(h, value):
    """noNewPrivileges sets (true) or leaves clear (false) the no_new_privs bit"""
    def edit(cfg):
        cfg["process"]["noNewPrivileges"] = value
    c = _running(h, edit)
    assert procfs.status(c.pid)["NoNewPrivs"] == ("1" if value else "0")


@case("PR-26", "config.md#linux-process oomScoreAdj", "MUST")
def test_oom_score_adj(h):
    """oomScoreAdj is written to the process's oom_score_adj"""
    def edit(cfg):
        cfg["process"]["oomScoreAdj"] = 500
    c = _running(h, edit)
    with open(f"/proc/{c.pid}/oom_score_adj") as f:
        assert f.read().strip() == "500"


@case("PR-27", "config.md#linux-process oomScoreAdj", "MUST")
def test_oom_score_adj_unset(h):
    """without oomScoreAdj the process keeps the runtime caller's oom_score_adj"""
    b = h.bundle(["cat", "/proc/self/oom_score_adj"])
    argv = ["/bin/sh", "-c", 'echo 123 >/proc/self/oom_score_adj && exec "$@"', "sh",
            *h.rt.cmd("run", "--bundle", b, h.cid())]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "123"


# --- uts ----------------------------------------------------------------------------


@case("PR-28", "config.md#hostname", "MUST")
def test_hostname(h):
    """hostname is the UTS hostname inside the container"""
    b = h.bundle(["hostname"], edit=lambda cfg: cfg.update(hostname="conf-host.example"))
    assert h.output(b).strip() == "conf-host.example"


@deviation("runc", "runc 1.1.5 ignores domainname (support came with runc 1.2)")
@case("PR-29", "config.md#domainname", "MUST")
def test_domainname(h):
    """domainname is the UTS domain name inside the container"""
    b = h.bundle(["cat", "/proc/sys/kernel/domainname"],
                 edit=lambda cfg: cfg.update(domainname="conf.example"))
    assert h.output(b).strip() == "conf.example"


# --- file descriptors ---------------------------------------------------------------


@case("PR-30", "runc: --preserve-fds", "RUNC")
def test_preserve_fds(h):
    """--preserve-fds N passes fds 3..3+N-1 to the container process"""
    path = h.path("preserved")
    with open(path, "w") as f:
        f.write("through-fd-3")
    b = h.bundle(["sh", "-c", "cat <&3"])
    argv = ["/bin/sh", "-c", 'exec 3<"$0" && exec "$@"', path,
            *h.rt.cmd("run", "--preserve-fds", "1", "--bundle", b, h.cid())]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert "through-fd-3" in r.stdout


@case("PR-31", "runc: stdio", "RUNC")
def test_stdio_of_detached(h):
    """a created container's stdout and stderr are the create caller's"""
    c = h.start(h.bundle(["sh", "-c", "echo to-out; echo to-err >&2"]))
    c.wait_stopped()
    assert "to-out" in c.output() and "to-err" in c.errors()


# --- linux.memoryPolicy (runtime-spec v1.3.0) -------------------------------------------

def _memory_policy(policy):
    def edit(cfg):
        cfg["linux"]["memoryPolicy"] = policy
    return edit


@needs("numa")
@deviation("runc", "runc 1.1.5 predates linux.memoryPolicy (runc 1.4): it ignores it")
@deviation("crun", "crun 1.8.1 predates linux.memoryPolicy: it ignores it")
@case("PR-32", "config-linux.md#memory-policy", "MUST")
def test_memory_policy(h):
    """linux.memoryPolicy is the process's NUMA policy: MPOL_BIND, MPOL_F_STATIC_NODES on
    node 0 shows as bind=static:0 in the host's /proc/<pid>/numa_maps, for the container
    process and for an exec'd one"""
    c = _running(h, _memory_policy({"mode": "MPOL_BIND", "nodes": "0",
                                    "flags": ["MPOL_F_STATIC_NODES"]}))
    assert procfs.numa_policy(c.pid) == "bind=static:0"
    r = h.rt("exec", c.cid, "sh", "-c", "head -n 1 /proc/self/numa_maps")
    assert r.rc == 0, r
    assert r.out.split()[1] == "bind=static:0", r.out


@needs("numa")
@deviation("runc", "runc 1.1.5 predates linux.memoryPolicy (runc 1.4): it ignores it")
@deviation("crun", "crun 1.8.1 predates linux.memoryPolicy: it ignores it")
@case("PR-33", "config-linux.md#memory-policy runtime.md#errors", "MUST")
def test_memory_policy_unknown_mode_fails(h):
    """a memoryPolicy mode that is not one of the spec's constants is an error at create,
    and no container is left"""
    b = h.bundle(WAIT, edit=_memory_policy({"mode": "MPOL_NOPE", "nodes": "0"}))
    c = h.create(b, check=False)
    assert not c.result.ok, c.result
    assert h.rt.status(c.cid) is None
