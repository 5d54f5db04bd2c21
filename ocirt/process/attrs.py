"""Process attributes: identity, capabilities, limits, scheduling.

Shared by the container init and by `exec`. The order in `set_identity` is runc's
finalizeNamespace: drop the bounding set, keep capabilities across the uid change, switch
groups and user, then set the effective/permitted/inheritable sets and raise the ambient
ones. Inheritable capabilities are only ever what the spec lists (CVE-2022-29162).
"""

from __future__ import annotations

import errno
import os

from ocirt import log
from ocirt.errors import OcirtError, errno_text
from ocirt.linux import consts as c
from ocirt.linux import libc
from ocirt.spec import options as opt
from ocirt.spec.plan import MAX_CPUS, Process, parse_cpu_list

RLIMIT_NAMES = {0: "RLIMIT_CPU", 1: "RLIMIT_FSIZE", 2: "RLIMIT_DATA", 3: "RLIMIT_STACK",
                4: "RLIMIT_CORE", 5: "RLIMIT_RSS", 6: "RLIMIT_NPROC", 7: "RLIMIT_NOFILE",
                8: "RLIMIT_MEMLOCK", 9: "RLIMIT_AS", 10: "RLIMIT_LOCKS",
                11: "RLIMIT_SIGPENDING", 12: "RLIMIT_MSGQUEUE", 13: "RLIMIT_NICE",
                14: "RLIMIT_RTPRIO", 15: "RLIMIT_RTTIME"}


def last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40


# --- applied by the parent to the init's PID ---------------------------------------------

def set_rlimits(pid: int, rlimits: list[tuple[int, int, int]]) -> None:
    """prlimit from outside: once the init is in a user namespace it could no longer raise
    a hard limit itself (runc does the same)."""
    most = (1 << 64) - 1  # RLIM_INFINITY
    for res, soft, hard in rlimits:
        try:
            libc.prlimit(pid, res, min(soft, most), min(hard, most))
        except OSError as exc:
            raise OcirtError(f"error setting rlimit type {res} ({RLIMIT_NAMES.get(res, res)}, "
                             f"soft {soft}, hard {hard}): {errno_text(exc.errno or 0)}"
                             ) from None


def set_oom_score_adj(pid: int, adj: int) -> None:
    try:
        with open(f"/proc/{pid}/oom_score_adj", "w") as f:
            f.write(str(adj))
    except OSError as exc:
        raise OcirtError(f"set oom_score_adj to {adj}: {errno_text(exc.errno or 0)}") from None


# --- applied by the process itself -----------------------------------------------------

def join_session_keyring(name: str, in_userns: bool, set_perm: bool = True) -> None:
    """Join the session keyring `name` (the kernel creates it unless one we can search
    exists), so the container does not share the caller's keys: runc's `_ses.<id>`,
    which `exec` joins again. As in runc, only a kernel without keyrings (ENOSYS) lets
    the process keep the caller's keyring; any other failure is an error."""
    try:
        serial = libc.keyctl(c.KEYCTL_JOIN_SESSION_KEYRING, name.encode())
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            return
        raise OcirtError(f"unable to join session keyring {name}: "
                         f"{errno_text(exc.errno or 0)} (--no-new-keyring keeps the "
                         "caller's)") from None
    if not set_perm:
        return  # exec: the init set them (runc's setns init leaves them as they are)
    # The kernel's default for a joined session keyring (possessor: all; user: view, read,
    # link) plus search for the container's user, as runc sets it: "other" in a user
    # namespace, "user" otherwise.
    perm = 0x3F130000 | (0x00000008 if in_userns else 0x00080000)
    try:
        libc.keyctl(c.KEYCTL_SETPERM, serial, perm)
    except OSError as exc:
        raise OcirtError(f"unable to mod keyring permissions: {errno_text(exc.errno or 0)}") \
            from None


def set_io_priority(prio: tuple[int, int] | None) -> None:
    if prio is None:
        return
    cls, level = prio
    try:
        libc.ioprio_set(1, 0, (cls << 13) | level)  # IOPRIO_WHO_PROCESS, self
    except OSError as exc:
        raise OcirtError(f"failed to set io priority: {errno_text(exc.errno or 0)}") from None


def set_scheduler(sched: dict[str, int] | None, cpus_narrowed: bool = False) -> None:
    """process.scheduler through sched_setattr(2). EPERM has two causes a user can fix:
    SCHED_DEADLINE needs every CPU of the root domain (runc's message when the cgroup
    narrows them), and on cgroup v1 with real-time group scheduling a new cpu cgroup has
    no real-time budget for SCHED_FIFO/SCHED_RR."""
    if sched is None:
        return
    try:
        libc.sched_setattr(0, sched["policy"], sched["flags"], sched["nice"],
                           sched["priority"], sched["runtime"], sched["deadline"],
                           sched["period"])
    except OSError as exc:
        hint = ""
        if exc.errno == errno.EPERM and cpus_narrowed:
            hint = (" (process scheduler can't be used together with AllowedCPUs: "
                    "linux.resources.cpu.cpus)")
        elif exc.errno == errno.EPERM and sched["policy"] in (1, 2):
            hint = (" (a cgroup v1 cpu controller with real-time group scheduling needs "
                    "linux.resources.cpu.realtimeRuntime)")
        raise OcirtError(f"error setting scheduler: {errno_text(exc.errno or 0)}{hint}") \
            from None


def set_personality(persona: int | None) -> None:
    if persona is not None:
        try:
            libc.personality(persona)
        except OSError as exc:
            raise OcirtError(f"unable to set personality: {errno_text(exc.errno or 0)}") \
                from None


def set_memory_policy(policy: tuple[int, list[int]] | None) -> None:
    """linux.memoryPolicy, set by the process itself just before exec (as runc does, for
    the init and for `exec`): the policy is the calling thread's and survives execve."""
    if policy is None:
        return
    mode, nodes = policy
    try:
        libc.set_mempolicy(mode, nodes)
    except OSError as exc:
        hint = ""
        if exc.errno == errno.EINVAL:
            hint = (" (the nodes must exist, be online and be in the container's cpuset; "
                    "the flags must suit the mode)")
        raise OcirtError(f"linux.memoryPolicy: set_mempolicy {memory_policy_text(policy)}: "
                         f"{errno_text(exc.errno or 0)}{hint}") from None


def memory_policy_text(policy: tuple[int, list[int]]) -> str:
    """`MPOL_BIND|MPOL_F_STATIC_NODES nodes 0,1` for an error message."""
    mode, nodes = policy
    names = [name for name, value in opt.MEMORY_POLICY_MODES.items()
             if value == mode & ~sum(opt.MEMORY_POLICY_FLAGS.values())]
    names += [name for name, value in opt.MEMORY_POLICY_FLAGS.items() if mode & value]
    return "|".join(names) + (f" nodes {','.join(map(str, nodes))}" if nodes else "")


def set_affinity(cpus: str, which: str, pid: int = 0) -> None:
    """process.execCPUAffinity's `which` ("initial" or "final") list for `pid` (0: us)."""
    if cpus:
        try:
            os.sched_setaffinity(pid, parse_cpu_list(cpus, f"process.execCPUAffinity.{which}"))
        except OSError as exc:
            raise OcirtError(f"process.execCPUAffinity.{which}: error setting CPU affinity "
                             f"{cpus!r}: {errno_text(exc.errno or 0)}") from None


def set_final_affinity(pid: int, proc: Process | None) -> None:
    """The CPUs of a process once it is in the container's cgroup, set by the runtime on
    its PID (runc's setFinalCPUAffinity): `execCPUAffinity.final` for an exec'd process
    (`proc`); with no execCPUAffinity at all, and for the init (`proc` None: the spec
    says the setting does not apply to it), every CPU, so that the container does not
    inherit the CPUs of whoever ran the runtime (`taskset -c 0 runc run`). The kernel
    narrows that to the container's cpuset. With only `initial`, the kernel decides
    (the cgroup move may have reset it)."""
    initial, final = proc.cpu_affinity if proc is not None and proc.cpu_affinity \
        else ("", "")
    if final:
        set_affinity(final, "final", pid)
    elif not initial:
        reset_affinity(pid)


def reset_affinity(pid: int) -> None:
    """Allow `pid` every CPU the kernel may ever have (best effort, as in runc)."""
    try:
        os.sched_setaffinity(pid, range(MAX_CPUS))
    except OSError as exc:
        log.warning(f"resetting the CPU affinity of pid {pid} failed: "
                    f"{errno_text(exc.errno or 0)}: the container process may keep the "
                    "runtime's CPU affinity")


def set_no_new_privs() -> None:
    libc.prctl(c.PR_SET_NO_NEW_PRIVS, 1)


def own_bounding_set() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                return int(line.split()[1], 16)
    return (1 << (last_cap() + 1)) - 1


def keep_grantable(proc: Process) -> None:
    """Leave out capabilities the runtime itself does not have (so cannot grant), with a
    warning: runtime-spec 1.1+ says runtimes SHOULD NOT fail for them (podman's
    --privileged lists every capability; this host lacks CAP_SYS_RESOURCE)."""
    if proc.caps is None:
        return
    from ocirt.spec.options import CAPABILITIES

    have = own_bounding_set()
    missing = 0
    for mask in proc.caps.values():
        missing |= mask & ~have
    if not missing:
        return
    names = [name for name, num in CAPABILITIES.items() if missing & (1 << num)]
    proc.caps = {kind: mask & have for kind, mask in proc.caps.items()}
    proc.warnings.append(f"capabilities {', '.join(names)} cannot be granted (the runtime "
                         "does not have them): left out")


def set_identity(proc: Process, setgroups_allowed: bool = True, apply_caps: bool = True
                 ) -> None:
    """Bounding set, user and groups, then the capability sets, as runc orders them.

    With `apply_caps=False` the effective/permitted/inheritable/ambient sets are left for
    `apply_capabilities` (the permitted set still holds everything the bounding set
    allowed): installing a seccomp filter without no_new_privs needs CAP_SYS_ADMIN, so
    then the filter goes in first and the capabilities are cut right after it.
    """
    caps = proc.caps
    if caps is not None:
        keep = caps.get("bounding", 0)
        for cap in range(last_cap() + 1):
            if not keep & (1 << cap):
                try:
                    libc.prctl(c.PR_CAPBSET_DROP, cap)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise OcirtError(f"unable to drop capability {cap} from the bounding "
                                         f"set: {errno_text(exc.errno or 0)}") from None
    libc.prctl(c.PR_SET_KEEPCAPS, 1)
    try:
        _set_user(proc, setgroups_allowed)
    finally:
        libc.prctl(c.PR_SET_KEEPCAPS, 0)
    if caps is not None and apply_caps:
        _set_caps(caps)


def apply_capabilities(proc: Process) -> None:
    if proc.caps is not None:
        _set_caps(proc.caps)


def raise_effective() -> None:
    """Make every permitted capability effective (for a privileged step such as loading
    a seccomp filter without no_new_privs)."""
    _, permitted, inheritable = libc.capget()
    libc.capset(permitted, permitted, inheritable)


def _set_user(proc: Process, setgroups_allowed: bool) -> None:
    if setgroups_allowed:
        try:
            os.setgroups(proc.additional_gids)
        except OSError as exc:
            raise OcirtError(f"setgroups {proc.additional_gids}: "
                             f"{errno_text(exc.errno or 0)}") from None
    elif proc.additional_gids:
        raise OcirtError("additionalGids cannot be set: setgroups is denied in this user "
                         "namespace")
    try:
        os.setresgid(proc.gid, proc.gid, proc.gid)
    except OSError as exc:
        raise OcirtError(f"setresgid {proc.gid}: {errno_text(exc.errno or 0)} (is the gid "
                         "mapped in the user namespace?)") from None
    try:
        os.setresuid(proc.uid, proc.uid, proc.uid)
    except OSError as exc:
        raise OcirtError(f"setresuid {proc.uid}: {errno_text(exc.errno or 0)} (is the uid "
                         "mapped in the user namespace?)") from None


def _set_caps(caps: dict[str, int]) -> None:
    eff, perm, inh = caps.get("effective", 0), caps.get("permitted", 0), caps.get(
        "inheritable", 0)
    try:
        libc.capset(eff, perm, inh)
    except OSError as exc:
        raise OcirtError(f"unable to apply caps: {errno_text(exc.errno or 0)}") from None
    ambient = caps.get("ambient", 0)
    try:
        libc.prctl(c.PR_CAP_AMBIENT, c.PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        return  # kernels before 4.3 have no ambient set
    for cap in range(64):
        if ambient & (1 << cap):
            if not (perm & inh) & (1 << cap):
                continue  # the kernel refuses it; runc only warns
            try:
                libc.prctl(c.PR_CAP_AMBIENT, c.PR_CAP_AMBIENT_RAISE, cap)
            except OSError as exc:
                raise OcirtError(f"unable to raise ambient capability {cap}: "
                                 f"{errno_text(exc.errno or 0)}") from None


def home_of(uid: int) -> str:
    """HOME for `uid` from the container's /etc/passwd ("/" if none), as runc sets it."""
    try:
        with open("/etc/passwd", encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.rstrip("\n").split(":")
                if len(parts) >= 6 and parts[2] == str(uid):
                    return parts[5] or "/"
    except OSError:
        pass
    return "/"


def lookup_path(name: str, env_path: str | None) -> str:
    """The executable to exec, as Go's exec.LookPath finds it (runc's create-time check):
    names with a slash are used as they are; others are searched in the process's PATH."""
    if "/" in name:
        _check_executable(name, name)
        return name
    for directory in (env_path or "").split(":"):
        candidate = os.path.join(directory or ".", name)
        try:
            _check_executable(candidate, name)
            return candidate
        except OcirtError:
            continue
    raise OcirtError(f'exec: "{name}": executable file not found in $PATH')


def _check_executable(path: str, name: str) -> None:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise OcirtError(f'exec: "{name}": stat {path}: {errno_text(exc.errno or 0)}') \
            from None
    if not (st.st_mode & 0o170000 == 0o100000 and st.st_mode & 0o111):
        raise OcirtError(f'exec: "{name}": permission denied')
    if not os.access(path, os.X_OK, effective_ids=True):
        raise OcirtError(f"exec {path}: permission denied")
