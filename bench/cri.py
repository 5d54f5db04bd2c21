#!/usr/bin/env python3
"""Kubernetes' path, timed: kubelet's pod lifecycle over the CRI, ocirt against runc.

    .venv/bin/python bench/cri.py [--rounds 10] [--out bench/results]

containerd (its CRI plugin, in a private sandbox: tests/cri/daemon.py) is configured as
the README tells a user (Debian's stock config.toml with contrib/containerd/config.toml
appended), with both handlers going through containerd's runc shim. Each round runs,
once per handler (the order alternating from round to round, so that load on the machine
hits both alike), what kubelet does for a one-container pod:

    RunPodSandbox, CreateContainer, StartContainer, ContainerStatus, ExecSync
    (/bin/true), StopContainer, RemoveContainer, StopPodSandbox, RemovePodSandbox

and times every CRI call (wall time, as kubelet waits for it). The shim's calls of the
runtime binary go through a small C wrapper (compiled here with cc; its fork and exec
cost both handlers alike, well under a millisecond a call), which logs each call's
command line, wall time and CPU time (user + sys of the runtime and the children it
reaped; a container's init is not reaped by the call that made it, for either runtime).
So the bench reports, per CRI call and for the whole pod: wall time, and the runtime's
calls made for it with their CPU time. Medians over the rounds; the first round of each
handler is a warm-up and is not counted.

Writes cri.md and cri.json to --out. Needs root, containerd and ctr, python3-grpcio and
python3-grpc-tools (as tests/cri does), and cc.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

CALLS = ("RunPodSandbox", "CreateContainer", "StartContainer", "ContainerStatus", "ExecSync",
         "StopContainer", "RemoveContainer", "StopPodSandbox", "RemovePodSandbox")
COMMAND = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done"]
RUNC_TABLE = ('[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]\n'
              '  runtime_type = "io.containerd.runc.v2"\n')

WRAPPER_C = r"""
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Run TARGET with our arguments; append "wall cpu arg\x1farg..." to LOG. */
int main(int argc, char **argv) {
    struct timespec a, b;
    struct rusage ru;
    int status, fd, i;
    pid_t pid;
    clock_gettime(CLOCK_MONOTONIC, &a);
    pid = fork();
    if (pid < 0)
        return 126;
    if (pid == 0) {
        argv[0] = TARGET;
        execv(TARGET, argv);
        _exit(127);
    }
    while (wait4(pid, &status, 0, &ru) < 0)
        ;
    clock_gettime(CLOCK_MONOTONIC, &b);
    fd = open(LOG, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
        char line[8192];
        int n = snprintf(line, sizeof line, "%.6f %.6f",
                         (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9,
                         ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
                         ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
        for (i = 1; i < argc && n < (int)sizeof line - 2; i++)
            n += snprintf(line + n, sizeof line - n, "%s%s", i == 1 ? " " : "\x1f", argv[i]);
        if (n > (int)sizeof line - 2)
            n = sizeof line - 2;
        line[n++] = '\n';
        write(fd, line, n);
        close(fd);
    }
    if (WIFSIGNALED(status)) {
        signal(WTERMSIG(status), SIG_DFL);
        kill(getpid(), WTERMSIG(status));
        return 128 + WTERMSIG(status);
    }
    return WEXITSTATUS(status);
}
"""

# Global flags of runc's (and ocirt's) that take a value: skipped to find the command.
_VALUED = {"--root", "--log", "--log-format", "--criu", "--rootless"}


def build_wrapper(work: str, name: str, target: str, log: str) -> str:
    """A wrapper binary for `target` that logs to `log`."""
    src = os.path.join(work, f"wrap-{name}.c")
    out = os.path.join(work, f"wrap-{name}")
    with open(src, "w") as f:
        f.write(WRAPPER_C)
    subprocess.run(["cc", "-O2", "-o", out, f'-DTARGET="{target}"', f'-DLOG="{log}"', src],
                   check=True)
    return out


def command_of(args: list[str]) -> str:
    """The runtime's subcommand in a logged command line (after the global flags)."""
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in _VALUED:
            i += 2
            continue
        if arg.startswith("-"):
            i += 1
            continue
        return arg
    return "?"


def read_log(path: str, start: int) -> tuple[list[dict], int]:
    """The wrapper's records from byte `start` on, and the new end."""
    if not os.path.exists(path):
        return [], start
    with open(path, "rb") as f:
        f.seek(start)
        data = f.read()
    records = []
    for line in data.decode(errors="replace").splitlines():
        wall, cpu, *rest = line.split(" ", 2)
        args = rest[0].split("\x1f") if rest else []
        records.append({"wall": float(wall), "cpu": float(cpu), "command": command_of(args),
                        "args": args})
    return records, start + len(data)


def config_file(work: str, runc_wrapper: str) -> str:
    """Debian's stock config with the README's snippet (tests/cri/configs.py), and the
    runc handler's binary set to its wrapper (the ocirt one is set by start_env)."""
    from tests.cri import configs

    path = configs.debian_with_snippet(work)
    with open(path) as f:
        text = f.read()
    assert text.count(RUNC_TABLE) == 1, "the runc runtime table of the snippet changed"
    options = ('\n  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n'
               f'    BinaryName = "{runc_wrapper}"\n')
    text = text.replace(RUNC_TABLE, RUNC_TABLE + options)
    with open(path, "w") as f:
        f.write(text)
    return path


def pod_lifecycle(env, handler: str, logs: dict[str, str], offsets: dict[str, int]
                  ) -> dict[str, dict]:
    """kubelet's calls for one pod; per CRI call: wall seconds and the runtime's calls."""
    from tests.cri.images import APP

    pb, rt = env.pb, env.rt
    out: dict[str, dict] = {}
    names = iter(CALLS)

    def timed(call, request):
        name = next(names)
        start = time.perf_counter()
        reply = call(request, timeout=120)
        wall = time.perf_counter() - start
        records, offsets[handler] = read_log(logs[handler], offsets[handler])
        out[name] = {"wall": wall, "runtime": records}
        return reply

    n = len(env.pods) + 1000 * os.getpid()
    logdir = tempfile.mkdtemp(prefix="ocirt-cri-bench-")
    try:
        ns = pb.NamespaceOption(network=pb.NODE, pid=pb.CONTAINER, ipc=pb.POD)
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=f"bench{n}-{handler}",
                                           uid=f"uid-bench-{n}-{time.monotonic_ns()}",
                                           namespace="ocirt-bench"),
            log_directory=logdir,
            linux=pb.LinuxPodSandboxConfig(
                cgroup_parent=env.cgroup_parent,
                security_context=pb.LinuxSandboxSecurityContext(namespace_options=ns)))
        pod = timed(rt.RunPodSandbox, pb.RunPodSandboxRequest(
            config=config, runtime_handler=handler)).pod_sandbox_id
        ctr = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="main"), image=pb.ImageSpec(image=APP),
            command=COMMAND, log_path="main.log",
            linux=pb.LinuxContainerConfig(
                security_context=pb.LinuxContainerSecurityContext(namespace_options=ns)))
        cid = timed(rt.CreateContainer, pb.CreateContainerRequest(
            pod_sandbox_id=pod, config=ctr, sandbox_config=config)).container_id
        timed(rt.StartContainer, pb.StartContainerRequest(container_id=cid))
        timed(rt.ContainerStatus, pb.ContainerStatusRequest(container_id=cid))
        r = timed(rt.ExecSync, pb.ExecSyncRequest(container_id=cid, cmd=["/bin/true"],
                                                  timeout=30))
        if r.exit_code != 0:
            raise RuntimeError(f"{handler}: ExecSync /bin/true exited {r.exit_code}: "
                               f"{r.stderr!r}")
        timed(rt.StopContainer, pb.StopContainerRequest(container_id=cid, timeout=10))
        timed(rt.RemoveContainer, pb.RemoveContainerRequest(container_id=cid))
        timed(rt.StopPodSandbox, pb.StopPodSandboxRequest(pod_sandbox_id=pod))
        timed(rt.RemovePodSandbox, pb.RemovePodSandboxRequest(pod_sandbox_id=pod))
    finally:
        shutil.rmtree(logdir, ignore_errors=True)
    return out


def summarize(samples: dict[str, list[dict[str, dict]]]) -> dict:
    """Medians per handler: per CRI call (wall, runtime calls, runtime CPU) and per pod."""
    result: dict = {}
    for handler, pods in samples.items():
        calls = {}
        for name in CALLS:
            rows = [p[name] for p in pods]
            commands = [" ".join(r["command"] for r in row["runtime"]) for row in rows]
            calls[name] = {
                "wall_ms": 1000 * statistics.median(row["wall"] for row in rows),
                "runtime_cpu_ms": 1000 * statistics.median(
                    sum(r["cpu"] for r in row["runtime"]) for row in rows),
                "runtime_wall_ms": 1000 * statistics.median(
                    sum(r["wall"] for r in row["runtime"]) for row in rows),
                "runtime_calls": max(set(commands), key=commands.count),
            }
        per_command: dict[str, list[float]] = {}
        for pod in pods:
            seen: dict[str, float] = {}
            for row in pod.values():
                for r in row["runtime"]:
                    seen[r["command"]] = seen.get(r["command"], 0.0) + r["cpu"]
            for command, cpu in seen.items():
                per_command.setdefault(command, []).append(cpu)
        result[handler] = {
            "calls": calls,
            "pod_wall_ms": 1000 * statistics.median(sum(r["wall"] for r in p.values())
                                                    for p in pods),
            "pod_runtime_cpu_ms": 1000 * statistics.median(
                sum(x["cpu"] for r in p.values() for x in r["runtime"]) for p in pods),
            "pod_runtime_wall_ms": 1000 * statistics.median(
                sum(x["wall"] for r in p.values() for x in r["runtime"]) for p in pods),
            "pod_runtime_calls": statistics.median(
                sum(len(r["runtime"]) for r in p.values()) for p in pods),
            "runtime_cpu_ms_by_command": {c: 1000 * statistics.median(v)
                                          for c, v in sorted(per_command.items())},
        }
    return result


def markdown(result: dict, meta: dict) -> str:
    a, b = meta["handlers"]
    ra, rb = result[a], result[b]
    lines = [f"Measured {meta['date']} on {meta['machine']}, load average {meta['load']}; "
             f"median of {meta['rounds']} interleaved pods per handler. Wall time of each "
             "CRI call (ms), and the CPU time (user + sys, ms) of the runtime calls the "
             "shim made for it.", "",
             f"| CRI call | {a} wall | {b} wall | {a}/{b} wall | {a} runtime CPU | "
             f"{b} runtime CPU | {a}/{b} CPU | runtime calls |",
             "|---|---|---|---|---|---|---|---|"]

    def ratio(x: float, y: float) -> str:
        return f"{x / y:.2f}" if y else "n/a"

    for name in CALLS:
        ca, cb = ra["calls"][name], rb["calls"][name]
        calls = ca["runtime_calls"] or "none"
        if cb["runtime_calls"] != ca["runtime_calls"]:
            calls += f" ({b}: {cb['runtime_calls'] or 'none'})"
        lines.append(f"| {name} | {ca['wall_ms']:.1f} | {cb['wall_ms']:.1f} | "
                     f"{ratio(ca['wall_ms'], cb['wall_ms'])} | {ca['runtime_cpu_ms']:.1f} | "
                     f"{cb['runtime_cpu_ms']:.1f} | "
                     f"{ratio(ca['runtime_cpu_ms'], cb['runtime_cpu_ms'])} | {calls} |")
    lines.append(f"| **the pod** | {ra['pod_wall_ms']:.1f} | {rb['pod_wall_ms']:.1f} | "
                 f"{ratio(ra['pod_wall_ms'], rb['pod_wall_ms'])} | "
                 f"{ra['pod_runtime_cpu_ms']:.1f} | {rb['pod_runtime_cpu_ms']:.1f} | "
                 f"{ratio(ra['pod_runtime_cpu_ms'], rb['pod_runtime_cpu_ms'])} | "
                 f"{ra['pod_runtime_calls']:g} ({b}: {rb['pod_runtime_calls']:g}) |")
    lines += ["", f"The runtime calls' own wall time per pod: {a} "
                  f"{ra['pod_runtime_wall_ms']:.1f} ms, {b} {rb['pod_runtime_wall_ms']:.1f} ms; "
                  "CPU per pod by runtime command (ms): "
                  + "; ".join(f"{h}: " + ", ".join(f"{c} {v:.1f}" for c, v in
                                                   result[h]["runtime_cpu_ms_by_command"].items())
                              for h in (a, b)), "",
              "Versions: " + "; ".join(f"{k}: {v}" for k, v in meta["versions"].items())]
    return "\n".join(lines) + "\n"


def _version(binary: list[str]) -> str:
    r = subprocess.run([*binary, "--version"], capture_output=True, text=True)
    return r.stdout.splitlines()[0] if r.stdout else "?"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/cri.py: run me as root", file=sys.stderr)
        return 2
    for tool in ("containerd", "ctr", "cc", "runc"):
        if shutil.which(tool) is None:
            print(f"bench/cri.py: {tool} not found", file=sys.stderr)
            return 2
    from bench.run import machine
    from conformance.bundle import make_rootfs
    from tests.cri import images
    from tests.cri.client import generate
    from tests.cri.conftest import start_env, stop_env
    from tests.cri.helpers import OCIRT

    work = tempfile.mkdtemp(prefix="ocirt-cri-bench-")
    env = None
    try:
        ocirt = os.path.join(work, "ocirt")
        subprocess.run([sys.executable, "-I", "-m", "ocirt.launcher", ocirt], check=True,
                       cwd=REPO)
        logs = {OCIRT: os.path.join(work, "ocirt.calls"), "runc": os.path.join(work, "runc.calls")}
        wrappers = {OCIRT: build_wrapper(work, "ocirt", ocirt, logs[OCIRT]),
                    "runc": build_wrapper(work, "runc", shutil.which("runc") or "runc",
                                          logs["runc"])}
        os.mkdir(os.path.join(work, "stubs"))
        modules = generate(os.path.join(work, "stubs"))
        archive = images.build_archive(make_rootfs(os.path.join(work, "rootfs")), work,
                                       images.default_sandbox_image())
        env = start_env(config_file(work, wrappers["runc"]), wrappers[OCIRT], modules,
                        archive)
        handlers = [OCIRT, "runc"]
        offsets = {h: 0 for h in handlers}
        samples: dict[str, list[dict[str, dict]]] = {h: [] for h in handlers}
        for n in range(args.rounds + 1):
            for handler in (handlers if n % 2 == 0 else handlers[::-1]):
                pod = pod_lifecycle(env, handler, logs, offsets)
                if n:  # round 0: the warm-up
                    samples[handler].append(pod)
        result = summarize(samples)
        meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "machine": machine(), "rounds": args.rounds, "handlers": handlers,
                "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
                "versions": {"ocirt": _version([ocirt]), "runc": _version(["runc"]),
                             "containerd": _version(["containerd"])}}
    finally:
        problems = stop_env(env) if env is not None else []
        shutil.rmtree(work, ignore_errors=True)
    if problems:
        print(f"bench/cri.py: left behind: {problems}", file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    for pods in samples.values():  # the command lines once, for the first pod
        for pod in pods[1:]:
            for row in pod.values():
                for record in row["runtime"]:
                    record.pop("args", None)
    with open(os.path.join(args.out, "cri.json"), "w") as f:
        json.dump({"meta": meta, "result": result, "samples": samples}, f, indent=1)
    text = markdown(result, meta)
    with open(os.path.join(args.out, "cri.md"), "w") as f:
        f.write(text)
    print(text)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
