"""The processes `exec` forks to run a new process inside an existing container.

The new process must be forked inside the container's pid namespace (setns of a pid
namespace moves only the caller's future children). Where `exec` may join that
namespace itself (it has CAP_SYS_ADMIN in its own user namespace: root, or rootless
podman's runtime) and the container has no time namespace (which, too, applies only to
children), it does so for the one fork, and forks the process straight into it
(`direct`): one fork of the interpreter per exec instead of two. Otherwise, like
`create`, it forks an intermediate that joins every namespace of the container (the
user namespace first) and then forks the process (`intermediate`).

The process joins the remaining namespaces (the user namespace first), takes the
container's root (through the init's /proc/<pid>/root, so a --no-pivot container works
too), sets up its terminal, identity and limits exactly as the init does for its own
process, and execs. Every process here stays non-dumpable until execve
(CVE-2016-9962). The exchange:

    direct:       C is born in the container's cgroups where it can be (cgroups.Birth,
                  as create's intermediate is: clone3 into the cgroup2 directory, and C
                  writes "0" to each v1 `tasks` file itself, first thing); P moves it
                  into the rest (clone3 refused, rootless, --cgroup, a paused
                  container, an initial execCPUAffinity), then
    P -> C  go                  join the namespaces
    intermediate:
    P -> I  go                  join the namespaces
    I -> P  exec-pid {pid}      the process is forked; the intermediate exits. P moves
                                the process into the container's cgroup while it takes
                                the container's root (ocirt.process.protocol says why)
    both:
    C -> P  ready               P sets rlimits and oom_score_adj on it (it is in the
                                cgroup by then: P reads this message only afterwards)
    P -> C  ready-ack
    then EOF on the socket when execve succeeded, or `error {message}` when it did not.
"""

from __future__ import annotations

import os

from ocirt.errors import OcirtError, errno_text
from ocirt.linux import consts as c
from ocirt.linux import libc
from ocirt.process import attrs, trampoline
from ocirt.process.child import (
    InitContext,
    apply_lsm,
    become_root_in_userns,
    close_other_fds,
    exec_process,
    fork_after_report,
    join_own_cgroups,
    join_session_keyring,
    make_non_dumpable,
    prepare_process,
    setup_terminal,
)


def intermediate(ctx: InitContext) -> None:
    _join_namespaces(ctx)
    fork_after_report(ctx, process, "exec-pid")


def direct(ctx: InitContext) -> None:
    """Forked inside the container's pid namespace already: the rest, then the process."""
    _join_namespaces(ctx)
    process(ctx)


def _join_namespaces(ctx: InitContext) -> None:
    """In the container's cgroup v1 directories, non-dumpable and without stray fds
    first, then, on "go", every namespace in ctx.ns_fds (the user namespace first)."""
    join_own_cgroups(ctx)
    make_non_dumpable()
    close_other_fds(ctx)
    ctx.channel.expect("go")
    affinity = ctx.plan.process.cpu_affinity
    if affinity:  # until the move into the container's cgroup (runtime-spec 1.2)
        attrs.set_affinity(affinity[0], "initial")
    for kind in c.JOIN_ORDER:
        fd = ctx.ns_fds.get(kind)
        if fd is None:
            continue
        try:
            libc.setns(fd, c.NAMESPACES[kind][0], kind)
        except OSError as exc:
            raise OcirtError(f"join the container's {kind} namespace: "
                             f"{errno_text(exc.errno or 0)}") from None
        os.close(fd)
        if kind == "user":
            ctx.in_userns = True
            become_root_in_userns()
    ctx.ns_fds = {}


def process(ctx: InitContext) -> None:
    plan = ctx.plan
    os.fchdir(ctx.root_fd)
    os.chroot(".")
    os.close(ctx.root_fd)
    ctx.root_fd = -1
    if plan.process.terminal:
        os.setsid()
        setup_terminal(ctx, dev_console=False)
    join_session_keyring(ctx, init=False)
    apply_lsm(plan)
    ctx.channel.send("ready")
    msg, _ = ctx.channel.expect("ready-ack")
    ctx.exec_pid = int(msg.get("pid") or 0)
    exec_path, env = prepare_process(ctx)
    exec_process(ctx, exec_path, env, trampoline.sealed_fd())
