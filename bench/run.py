#!/usr/bin/env python3
"""ocirt against runc and crun on the same work, interleaved, with medians and ratios.

    .venv/bin/python bench/run.py [--rounds 20] [--concurrent 100] [--concurrent-rounds 3]
         [--sif]
         [--runtime NAME=PATH ...] [--out bench/results]

Runtimes: `ocirt` is the launcher `python -m ocirt.launcher` writes (what contrib/setup.sh
installs as /usr/local/bin/ocirt), made for this checkout in the bench's work directory;
`ocirt-pip` is the script `pip install` puts in .venv/bin; runc and crun are found on
PATH. `--runtime NAME=PATH` adds a runtime or replaces one of those.

Operations, each timed as the whole command an engine would run, wall time and CPU time
(user + sys of the command and the children it reaped, from wait4):
  run          `run` of /bin/true in the foreground (create + start + wait + delete)
  create, start, delete, and their sum c+s+d, on a /bin/true container
  exec         `exec` of /bin/true into a running container
  state, ps, events --stats (one-shot), kill KILL: on a running `sleep` container
  shim         containerd's runc shim's calls for one task, each with `--root R --log F
               --log-format json`: create --pid-file, start, state, kill KILL, delete
  floor        `python3 -I -S -c pass` with ocirt's interpreter (no runtime)
  rss          resident memory of the container's waiting init (status created)
  concurrent   N containers started at once (`run -d`): wall time, CPU per container;
               medians of --concurrent-rounds rounds, the runtimes interleaved as above

For the ocirt runtimes the bench also counts, per command, the modules its process has
loaded at exit and the files it opened (bench/count.py, an audit hook), so that every
import a change adds to a command's path shows up.

Rounds interleave the runtimes (round 1: ocirt, runc, crun; round 2: ...), so load
changes on the machine hit all of them alike. The whole run happens in a private mount +
cgroup namespace whose cgroup hierarchies are remounted from inside (conformance.sandbox),
so no runtime can create a cgroup outside ours, and without the hybrid host's cgroup2
mount (crun 1.8 refuses hybrid hosts). Writes results.md, results.json and, when
matplotlib is installed (python3-matplotlib), chart.png to --out.
"""

from __future__ import annotations

import argparse
import concurrent.futures
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

# Operations timed in every round, in table order; c+s+d is derived.
OPS = ("run", "create", "start", "delete", "c+s+d", "exec", "state", "kill", "ps",
       "events", "shim")
INSIDE = "OCIRT_BENCH_INSIDE"
VENV_PYTHON = os.path.join(REPO, ".venv", "bin", "python")


def default_runtimes(work: str) -> dict[str, str]:
    """ocirt as the launcher (written for this checkout) and as pip's script, runc, crun."""
    found: dict[str, str] = {}
    if os.path.exists(VENV_PYTHON):
        launcher = os.path.join(work, "ocirt")
        subprocess.run([VENV_PYTHON, "-I", "-m", "ocirt.launcher", launcher], check=True,
                       cwd=REPO)
        found["ocirt"] = launcher
        found["ocirt-pip"] = os.path.join(REPO, ".venv", "bin", "ocirt")
    for name in ("runc", "crun"):
        path = shutil.which(name)
        if path:
            found[name] = path
    return {k: v for k, v in found.items() if os.path.exists(v)}


def enter_sandbox(argv: list[str]) -> int:
    """Re-run this script inside a private mount + cgroup namespace (see the docstring)."""
    from conformance.sandbox import setup_lines

    script = "\n".join(setup_lines(hide_unified=True) + ['exec "$@"'])
    env = dict(os.environ, **{INSIDE: "1"})
    cmd = ["unshare", "--mount", "--cgroup", "--propagation", "private", "--", "bash", "-c",
           script, "bench", sys.executable, os.path.abspath(__file__), *argv]
    return subprocess.call(cmd, env=env)


class Failed(RuntimeError):
    pass


class Runtime:
    def __init__(self, name: str, binary: str, root: str) -> None:
        self.name, self.binary, self.root = name, binary, root
        self.log = root + ".log"

    def __call__(self, *args: str, check: bool = True, shim: bool = False
                 ) -> tuple[float, float]:
        """Run one command; its wall time and CPU time (user + sys) in seconds."""
        extra = ["--log", self.log, "--log-format", "json"] if shim else []
        # stderr to a file, not a pipe: the container inherits it, and a pipe would keep
        # us waiting for EOF as long as the container lives.
        with tempfile.TemporaryFile() as err:
            start = time.perf_counter()
            proc = subprocess.Popen([self.binary, "--root", self.root, *extra, *args],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=err)
            _, status, usage = os.wait4(proc.pid, 0)
            elapsed = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
            if check and proc.returncode != 0:
                err.seek(0)
                raise Failed(f"{self.name} {' '.join(args)}: "
                             f"{err.read().decode(errors='replace')[-300:]}")
        return elapsed, usage.ru_utime + usage.ru_stime

    def output(self, *args: str) -> str:
        return subprocess.run([self.binary, "--root", self.root, *args], check=True,
                              capture_output=True, text=True).stdout

    def pid(self, cid: str) -> int:
        return int(json.loads(self.output("state", cid))["pid"])

    def wait_stopped(self, cid: str) -> None:
        for _ in range(200):
            if json.loads(self.output("state", cid))["status"] == "stopped":
                return
            time.sleep(0.01)


def make_bundles(work: str) -> dict[str, str]:
    from conformance.bundle import default_config, make_bundle

    bundles = {}
    for name, args in (("true", ["/bin/true"]), ("sleep", ["sleep", "3600"])):
        config = default_config(args)
        config["linux"].pop("resources", None)
        bundles[name] = make_bundle(os.path.join(work, name), config=config)
    return bundles


def one_round(rt: Runtime, bundles: dict[str, str], n: int, skip: set[str]
              ) -> dict[str, tuple[float, float]]:
    """Every operation once; (wall, cpu) seconds by operation. An operation the runtime
    lacks (crun has no `events`) goes into `skip` at the warm-up and is not timed again."""
    times: dict[str, tuple[float, float]] = {}
    cid = f"b{n}"
    times["run"] = rt("run", "--bundle", bundles["true"], cid + "r")
    times["create"] = rt("create", "--bundle", bundles["true"], cid + "l")
    times["start"] = rt("start", cid + "l")
    rt.wait_stopped(cid + "l")
    times["delete"] = rt("delete", cid + "l")
    times["c+s+d"] = _sum(times["create"], times["start"], times["delete"])
    rt("run", "-d", "--bundle", bundles["sleep"], cid + "e")
    try:
        times["exec"] = rt("exec", cid + "e", "/bin/true")
        times["state"] = rt("state", cid + "e")
        for op, args in (("ps", ("ps", cid + "e")),
                         ("events", ("events", "--stats", cid + "e"))):
            if op not in skip:
                try:
                    times[op] = rt(*args)
                except Failed:
                    if n != WARMUP:
                        raise
                    skip.add(op)
        times["kill"] = rt("kill", cid + "e", "KILL")
        rt.wait_stopped(cid + "e")
    finally:
        rt("delete", "--force", cid + "e", check=False)
    times["shim"] = shim_task(rt, bundles, cid + "s")
    return times


WARMUP = -1


def _sum(*pairs: tuple[float, float]) -> tuple[float, float]:
    return sum(p[0] for p in pairs), sum(p[1] for p in pairs)


def shim_task(rt: Runtime, bundles: dict[str, str], cid: str) -> tuple[float, float]:
    """containerd's runc shim's calls for one task, with its global flags."""
    pid_file = os.path.join(os.path.dirname(rt.root), cid + ".pid")
    steps = [rt("create", "--bundle", bundles["sleep"], "--pid-file", pid_file, cid,
                shim=True),
             rt("start", cid, shim=True),
             rt("state", cid, shim=True),
             rt("kill", cid, "KILL", shim=True)]
    rt.wait_stopped(cid)
    steps.append(rt("delete", cid, shim=True))
    return _sum(*steps)


def waiting_rss(rt: Runtime, bundles: dict[str, str]) -> int:
    """VmRSS (kB) of the init of a created container."""
    rt("create", "--bundle", bundles["sleep"], "rss")
    try:
        with open(f"/proc/{rt.pid('rss')}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0
    finally:
        rt("delete", "--force", "rss")


def concurrent_start(rt: Runtime, bundles: dict[str, str], count: int) -> dict:
    """Wall time to start `count` containers at once, the CPU time all the commands took,
    and how many failed."""
    ids = [f"c{i}" for i in range(count)]
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
        results = list(pool.map(
            lambda cid: rt("run", "-d", "--bundle", bundles["sleep"], cid, check=False), ids))
    wall = time.perf_counter() - start
    failures = sum(1 for cid in ids if not _exists(rt, cid))
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda cid: rt("delete", "--force", cid, check=False), ids))
    return {"count": count, "wall_s": wall, "failures": failures,
            "cpu_s_per_container": sum(cpu for _, cpu in results) / count}


def interleaved_concurrent(rts: list[Runtime], bundles: dict[str, str], count: int,
                           rounds: int) -> dict[str, dict]:
    """concurrent_start for every runtime, `rounds` times, the order rotating from round
    to round (a machine whose load changes hits them all alike); medians per runtime."""
    runs: dict[str, list[dict]] = {rt.name: [] for rt in rts}
    for n in range(max(rounds, 1)):
        for rt in rts[n % len(rts):] + rts[:n % len(rts)]:
            runs[rt.name].append(concurrent_start(rt, bundles, count))
    return {name: {"count": count, "rounds": len(done),
                   "wall_s": statistics.median(r["wall_s"] for r in done),
                   "cpu_s_per_container": statistics.median(r["cpu_s_per_container"]
                                                            for r in done),
                   "failures": sum(r["failures"] for r in done)}
            for name, done in runs.items()}


def _exists(rt: Runtime, cid: str) -> bool:
    proc = subprocess.run([rt.binary, "--root", rt.root, "state", cid], capture_output=True,
                          text=True)
    return proc.returncode == 0 and json.loads(proc.stdout)["status"] == "running"


def floor_times(python: str, rounds: int) -> tuple[float, float]:
    """Median wall and CPU seconds of `python -I -S -c pass`: CPython's own start."""
    walls, cpus = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        proc = subprocess.Popen([python, "-I", "-S", "-c", "pass"])
        _, _, usage = os.wait4(proc.pid, 0)
        walls.append(time.perf_counter() - start)
        cpus.append(usage.ru_utime + usage.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


# --- what each ocirt command loads (bench/count.py) -----------------------------------

def interpreter_of(script: str) -> list[str]:
    """The #! line of an entry script as argv: interpreter and its flags."""
    with open(script, "rb") as f:
        line = f.readline().decode()
    if not line.startswith("#!"):
        raise Failed(f"{script}: no #! line")
    return line[2:].split()


def count_loads(rt: Runtime, bundles: dict[str, str]) -> dict[str, dict[str, int]]:
    """Per command: modules loaded at exit (all, and ocirt's own) and files opened."""
    counter = os.path.join(REPO, "bench", "count.py")
    report = rt.root + ".count"
    python = interpreter_of(rt.binary)
    out: dict[str, dict[str, int]] = {}

    def count(op: str, *args: str, shim: bool = False) -> None:
        extra = ["--log", rt.log, "--log-format", "json"] if shim else []
        subprocess.run([*python, counter, report, rt.binary, "--root", rt.root, *extra,
                        *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True)
        with open(report) as f:
            found = json.load(f)
        out[op] = {"modules": len(found["modules"]),
                   "ocirt_modules": sum(1 for m in found["modules"]
                                        if m == "ocirt" or m.startswith("ocirt.")),
                   "files": len(found["opened"])}

    count("run", "run", "--bundle", bundles["true"], "nr")
    count("create", "create", "--bundle", bundles["true"], "nl")
    count("start", "start", "nl")
    rt.wait_stopped("nl")
    count("delete", "delete", "nl")
    rt("run", "-d", "--bundle", bundles["sleep"], "ne")
    try:
        count("exec", "exec", "ne", "/bin/true")
        count("state", "state", "ne")
        count("ps", "ps", "ne")
        count("events", "events", "--stats", "ne")
        count("shim state", "state", "ne", shim=True)
        count("kill", "kill", "ne", "KILL")
    finally:
        rt("delete", "--force", "ne", check=False)
    return out


def sif_numbers(size_mb: int, ocirt: str) -> dict[str, float]:
    """Median seconds from `sif bundle` to the first instruction, mounted and unpacked,
    with a cold page cache (a job's first start on a node)."""
    script = os.path.join(REPO, "bench", "sif", "mount_vs_unpack.py")
    out = subprocess.run([sys.executable, script, "--size-mb", str(size_mb), "--runs", "3",
                          "--drop-caches", "--ocirt", ocirt, "--json"],
                         check=True, capture_output=True, text=True).stdout
    data = json.loads(out)
    return {mode: statistics.median(r["first_instruction_s"] for r in runs)
            for mode, runs in data["modes"].items()}


def machine() -> str:
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f
                      if line.startswith("model name")), os.uname().machine)
    return (f"{model}, {os.cpu_count()} CPUs, Linux {os.uname().release}, "
            f"{os.uname().machine}")


def versions(runtimes: dict[str, str]) -> dict[str, str]:
    out = {}
    for name, binary in runtimes.items():
        proc = subprocess.run([binary, "--version"], capture_output=True, text=True)
        out[name] = proc.stdout.splitlines()[0] if proc.stdout else "?"
    return out


def measure(args: argparse.Namespace, runtimes: dict[str, str], work: str) -> dict:
    rts = [Runtime(n, b, os.path.join(work, "state-" + n)) for n, b in runtimes.items()]
    try:
        bundles = make_bundles(work)
        samples: dict[str, dict[str, list[tuple[float, float]]]] = {
            rt.name: {op: [] for op in OPS} for rt in rts}
        skip: dict[str, set[str]] = {rt.name: set() for rt in rts}
        for rt in rts:  # warm-up: caches, page cache, seccomp/pyc caches
            one_round(rt, bundles, WARMUP, skip[rt.name])
        for n in range(args.rounds):
            for rt in rts:
                for op, value in one_round(rt, bundles, n, skip[rt.name]).items():
                    samples[rt.name][op].append(value)
        result: dict = {"date": time.strftime("%Y-%m-%d"), "machine": machine(),
                        "versions": versions(runtimes), "rounds": args.rounds,
                        "median_ms": {}, "cpu_ms": {}, "rss_kb": {}, "concurrent": {},
                        "loads": {}}
        for rt in rts:
            done = {op: v for op, v in samples[rt.name].items() if v}
            result["median_ms"][rt.name] = {
                op: 1000 * statistics.median(w for w, _ in v) for op, v in done.items()}
            result["cpu_ms"][rt.name] = {
                op: 1000 * statistics.median(c for _, c in v) for op, v in done.items()}
            result["rss_kb"][rt.name] = waiting_rss(rt, bundles)
            if rt.name.startswith("ocirt"):
                result["loads"][rt.name] = count_loads(rt, bundles)
        result["concurrent"] = interleaved_concurrent(rts, bundles, args.concurrent,
                                                      args.concurrent_rounds)
        if os.path.exists(VENV_PYTHON):
            wall, cpu = floor_times(VENV_PYTHON, max(args.rounds, 10))
            result["floor_ms"] = {"wall": 1000 * wall, "cpu": 1000 * cpu}
        if args.sif:
            result["sif_first_instruction_s"] = sif_numbers(args.sif_size_mb, runtimes["ocirt"])
        return result
    finally:
        for rt in rts:  # whatever an interrupted round left behind
            for cid in rt.output("list", "-q").split():
                rt("delete", "--force", cid, check=False)


LABELS = {"run": "`run` of /bin/true", "create": "`create`", "start": "`start`",
          "delete": "`delete` (stopped)", "c+s+d": "create + start + delete",
          "exec": "`exec` of /bin/true", "state": "`state`", "kill": "`kill` KILL",
          "ps": "`ps`", "events": "`events --stats`",
          "shim": "shim task: create, start, state, kill, delete with `--log F "
                  "--log-format json`"}


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or not b else f"{a / b:.2f}"


def markdown(result: dict) -> str:
    names = list(result["median_ms"])
    base = "runc" if "runc" in names else names[0]
    others = [n for n in names if n != base]
    wall, cpu = result["median_ms"], result["cpu_ms"]
    lines = [f"Measured {result['date']} on {result['machine']}; median of "
             f"{result['rounds']} interleaved rounds. Wall time, then CPU time (user + sys "
             "of the command and the children it reaped), in ms.", "",
             "| operation | " + " | ".join(names) + " | " +
             " | ".join(f"{n}/{base}" for n in others) + " | " +
             " | ".join(f"{n}/{base} CPU" for n in others) + " |",
             "|" + "---|" * (1 + len(names) + 2 * len(others))]
    for op in OPS:
        cells = [f"{_ms(wall[n].get(op))} ({_ms(cpu[n].get(op))} CPU)" for n in names]
        cells += [_ratio(wall[n].get(op), wall[base].get(op)) for n in others]
        cells += [_ratio(cpu[n].get(op), cpu[base].get(op)) for n in others]
        lines.append(f"| {LABELS[op]} | " + " | ".join(cells) + " |")
    rss = [f"{kb} kB" if kb < 1024 else f"{kb / 1024:.1f} MB"
           for kb in (result["rss_kb"][n] for n in names)]
    rss += [_ratio(result["rss_kb"][n], max(result["rss_kb"][base], 1)) for n in others]
    lines.append("| waiting init RSS | " + " | ".join(rss + [""] * len(others)) + " |")
    conc = result["concurrent"]
    count = conc[names[0]]["count"]
    cells = [f"{conc[n]['wall_s']:.2f} s, {1000 * conc[n]['cpu_s_per_container']:.1f} ms CPU "
             f"each ({conc[n]['failures']} failed)" for n in names]
    cells += [_ratio(conc[n]["wall_s"], conc[base]["wall_s"]) for n in others]
    cells += [_ratio(conc[n]["cpu_s_per_container"], conc[base]["cpu_s_per_container"])
              for n in others]
    lines.append(f"| {count} concurrent `run -d` | " + " | ".join(cells) + " |")
    if "floor_ms" in result:
        f = result["floor_ms"]
        lines += ["", f"CPython's own start (`python3 -I -S -c pass`, ocirt's interpreter): "
                      f"{f['wall']:.1f} ms wall, {f['cpu']:.1f} ms CPU."]
    for name, loads in result.get("loads", {}).items():
        lines += ["", f"What each command of `{name}` loads (its own process, at exit): "
                      "modules in sys.modules (ocirt's own), files opened after start-up.",
                  "", "| command | modules | ocirt modules | files opened |",
                  "|---|---|---|---|"]
        for op, c in loads.items():
            lines.append(f"| {op} | {c['modules']} | {c['ocirt_modules']} | {c['files']} |")
    if "sif_first_instruction_s" in result:
        sif = result["sif_first_instruction_s"]
        lines += ["", "SIF, `sif bundle` to the container's first instruction (ocirt): " +
                  ", ".join(f"{mode} {value:.3f} s" for mode, value in sif.items())]
    lines += ["", "Versions: " + "; ".join(f"{n}: {v}" for n, v in result["versions"].items())]
    return "\n".join(lines) + "\n"


CHART_OPS = ("run", "c+s+d", "exec", "state", "kill", "delete", "ps", "events")


def chart(result: dict, path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = list(result["median_ms"])
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.5),
                             gridspec_kw={"width_ratios": [6, 1.2, 1.2]})
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [result["median_ms"][name].get(op, 0) for op in CHART_OPS]
        axes[0].bar([x + i * width for x in range(len(CHART_OPS))], values, width,
                    label=name)
    if "floor_ms" in result:
        axes[0].axhline(result["floor_ms"]["wall"], color="grey", linestyle=":",
                        label="python3 -I -S -c pass")
    axes[0].set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(CHART_OPS))],
                       CHART_OPS)
    axes[0].set_ylabel("median wall time (ms)")
    axes[0].legend(fontsize=8)
    colors = [f"C{i}" for i in range(len(names))]
    rss = axes[1].bar(names, [result["rss_kb"][n] / 1024 for n in names], color=colors)
    # Labels on the small panels: a 12 kB bar next to a 9 MB one is invisible.
    axes[1].bar_label(rss, labels=[f"{result['rss_kb'][n]} kB" if result["rss_kb"][n] < 1024
                                   else f"{result['rss_kb'][n] / 1024:.1f} MB" for n in names],
                      fontsize=7)
    axes[1].set_ylabel("waiting init RSS (MB)")
    count = result["concurrent"][names[0]]["count"]
    conc = axes[2].bar(names, [result["concurrent"][n]["wall_s"] for n in names],
                       color=colors)
    axes[2].bar_label(conc, fmt="%.2f s", fontsize=7)
    axes[2].set_ylabel(f"{count} concurrent run -d (s)")
    for ax in axes[1:]:
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    fig.suptitle(f"ocirt vs runc vs crun, {result['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--concurrent", type=int, default=100)
    ap.add_argument("--concurrent-rounds", type=int, default=3)
    ap.add_argument("--runtime", action="append", default=[], metavar="NAME=PATH")
    ap.add_argument("--only", action="append", default=[], metavar="NAME",
                    help="bench only these runtimes (by name)")
    ap.add_argument("--sif", action="store_true", help="also run the SIF benchmark")
    ap.add_argument("--sif-size-mb", type=int, default=500)
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/run.py: run me as root", file=sys.stderr)
        return 2
    # An editable install has no .pyc files until something writes them: let the
    # warm-up round do it, as it happens on any machine without this setting.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    if not os.environ.get(INSIDE):
        return enter_sandbox(sys.argv[1:])
    work = tempfile.mkdtemp(prefix="ocirt-bench-")
    try:
        # --runtime NAME=PATH adds a runtime or replaces the default one of that name.
        runtimes = {**default_runtimes(work), **dict(r.split("=", 1) for r in args.runtime)}
        if args.only:
            runtimes = {n: p for n, p in runtimes.items() if n in args.only}
        result = measure(args, runtimes, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(result, f, indent=2)
    text = markdown(result)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(text)
    drew = chart(result, os.path.join(args.out, "chart.png"))
    print(text + ("" if drew else "(no chart: install python3-matplotlib)\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
