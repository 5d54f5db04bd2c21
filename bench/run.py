#!/usr/bin/env python3
"""ocirt against runc and crun on the same work, interleaved, with medians and ratios.

    sudo .venv/bin/python bench/run.py [--rounds 20] [--concurrent 100] [--sif]
         [--runtime NAME=PATH ...] [--out bench/results]

`--runtime` adds a runtime or replaces a default one (ocirt is /usr/local/bin/ocirt as
contrib/setup.sh installs it, else the repository's .venv/bin/ocirt; runc and crun are
found on PATH).

Operations, each timed as the whole command an engine would run:
  run          `run` of /bin/true in the foreground (create + start + wait + delete)
  lifecycle    `create` + `start` + `delete` of a /bin/true container (sum of the three)
  exec         `exec` of /bin/true into a running container
  state        `state` of a running container
  rss          resident memory of the container's waiting init (status created)
  concurrent   N containers started at once (`run -d`), wall time and failures
  sif          (with --sif, ocirt only) bench/sif/mount_vs_unpack.py's numbers

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

OPS = ("run", "lifecycle", "exec", "state")
INSIDE = "OCIRT_BENCH_INSIDE"


def default_runtimes() -> dict[str, str]:
    # What contrib/setup.sh installs for engines (the -I -S launcher), else the venv's.
    installed = "/usr/local/bin/ocirt"
    found = {"ocirt": installed if os.path.exists(installed)
             else os.path.join(REPO, ".venv", "bin", "ocirt")}
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


class Runtime:
    def __init__(self, name: str, binary: str, root: str) -> None:
        self.name, self.binary, self.root = name, binary, root

    def __call__(self, *args: str, check: bool = True) -> float:
        """Run one command; its wall time in seconds."""
        # stderr to a file, not a pipe: the container inherits it, and a pipe would keep
        # us waiting for EOF as long as the container lives.
        with tempfile.TemporaryFile() as err:
            start = time.perf_counter()
            proc = subprocess.run([self.binary, "--root", self.root, *args],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=err)
            elapsed = time.perf_counter() - start
            if check and proc.returncode != 0:
                err.seek(0)
                raise RuntimeError(f"{self.name} {' '.join(args)}: "
                                   f"{err.read().decode(errors='replace')[-300:]}")
        return elapsed

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


def one_round(rt: Runtime, bundles: dict[str, str], n: int) -> dict[str, float]:
    times: dict[str, float] = {}
    cid = f"b{n}"
    times["run"] = rt("run", "--bundle", bundles["true"], cid + "r")
    t = rt("create", "--bundle", bundles["true"], cid + "l")
    t += rt("start", cid + "l")
    rt.wait_stopped(cid + "l")
    t += rt("delete", cid + "l")
    times["lifecycle"] = t
    rt("run", "-d", "--bundle", bundles["sleep"], cid + "e")
    times["exec"] = rt("exec", cid + "e", "/bin/true")
    times["state"] = rt("state", cid + "e")
    rt("delete", "--force", cid + "e")
    return times


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


def concurrent_start(rt: Runtime, bundles: dict[str, str], count: int) -> tuple[float, int]:
    """Wall time to start `count` containers at once, and how many failed."""
    ids = [f"c{i}" for i in range(count)]
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(max_workers=count) as pool:
        results = list(pool.map(
            lambda cid: rt("run", "-d", "--bundle", bundles["sleep"], cid, check=False), ids))
    wall = time.perf_counter() - start
    failures = sum(1 for cid in ids if not _exists(rt, cid))
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda cid: rt("delete", "--force", cid, check=False), ids))
    del results
    return wall, failures


def _exists(rt: Runtime, cid: str) -> bool:
    proc = subprocess.run([rt.binary, "--root", rt.root, "state", cid], capture_output=True,
                          text=True)
    return proc.returncode == 0 and json.loads(proc.stdout)["status"] == "running"


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


def measure(args: argparse.Namespace, runtimes: dict[str, str]) -> dict:
    work = tempfile.mkdtemp(prefix="ocirt-bench-")
    rts = [Runtime(n, b, os.path.join(work, "state-" + n)) for n, b in runtimes.items()]
    try:
        bundles = make_bundles(work)
        samples: dict[str, dict[str, list[float]]] = {rt.name: {op: [] for op in OPS}
                                                      for rt in rts}
        for rt in rts:  # warm-up: caches, page cache, seccomp/pyc caches
            one_round(rt, bundles, 999)
        for n in range(args.rounds):
            for rt in rts:
                for op, value in one_round(rt, bundles, n).items():
                    samples[rt.name][op].append(value)
        result: dict = {"date": time.strftime("%Y-%m-%d"), "machine": machine(),
                        "versions": versions(runtimes), "rounds": args.rounds,
                        "median_ms": {}, "rss_kb": {}, "concurrent": {}}
        for rt in rts:
            result["median_ms"][rt.name] = {op: 1000 * statistics.median(v)
                                            for op, v in samples[rt.name].items()}
            result["rss_kb"][rt.name] = waiting_rss(rt, bundles)
            wall, failures = concurrent_start(rt, bundles, args.concurrent)
            result["concurrent"][rt.name] = {"count": args.concurrent, "wall_s": wall,
                                             "failures": failures}
        if args.sif:
            result["sif_first_instruction_s"] = sif_numbers(args.sif_size_mb, runtimes["ocirt"])
        return result
    finally:
        for rt in rts:  # whatever an interrupted round left behind
            for cid in rt.output("list", "-q").split():
                rt("delete", "--force", cid, check=False)
        shutil.rmtree(work, ignore_errors=True)


def markdown(result: dict) -> str:
    names = list(result["median_ms"])
    base = "runc" if "runc" in names else names[0]
    head = "| operation | " + " | ".join(names) + " | " + " | ".join(
        f"{n}/{base}" for n in names if n != base) + " |"
    lines = [f"Measured {result['date']} on {result['machine']}; median of "
             f"{result['rounds']} interleaved rounds.", "",
             head, "|" + "---|" * (1 + len(names) + len(names) - 1)]
    for op in OPS:
        row = [f"{result['median_ms'][n][op]:.1f} ms" for n in names]
        ratios = [f"{result['median_ms'][n][op] / result['median_ms'][base][op]:.2f}"
                  for n in names if n != base]
        lines.append(f"| {op} | " + " | ".join(row + ratios) + " |")
    rss = [f"{kb} kB" if kb < 1024 else f"{kb / 1024:.1f} MB"
           for kb in (result["rss_kb"][n] for n in names)]
    rss_ratio = [f"{result['rss_kb'][n] / max(result['rss_kb'][base], 1):.2f}"
                 for n in names if n != base]
    lines.append("| waiting init RSS | " + " | ".join(rss + rss_ratio) + " |")
    conc = [f"{result['concurrent'][n]['wall_s']:.2f} s ({result['concurrent'][n]['failures']}"
            f" failed)" for n in names]
    conc_ratio = [f"{result['concurrent'][n]['wall_s'] / result['concurrent'][base]['wall_s']:.2f}"
                  for n in names if n != base]
    count = result["concurrent"][names[0]]["count"]
    lines.append(f"| {count} concurrent starts | " + " | ".join(conc + conc_ratio) + " |")
    if "sif_first_instruction_s" in result:
        sif = result["sif_first_instruction_s"]
        lines += ["", "SIF, `sif bundle` to the container's first instruction (ocirt): " +
                  ", ".join(f"{mode} {value:.3f} s" for mode, value in sif.items())]
    lines += ["", "Versions: " + "; ".join(f"{n}: {v}" for n, v in result["versions"].items())]
    return "\n".join(lines) + "\n"


def chart(result: dict, path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = list(result["median_ms"])
    fig, axes = plt.subplots(1, 3, figsize=(12, 4), gridspec_kw={"width_ratios": [4, 1, 1]})
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        values = [result["median_ms"][name][op] for op in OPS]
        axes[0].bar([x + i * width for x in range(len(OPS))], values, width, label=name)
    axes[0].set_xticks([x + width * (len(names) - 1) / 2 for x in range(len(OPS))], OPS)
    axes[0].set_ylabel("median wall time (ms)")
    axes[0].legend()
    # Labels on the small panels: a 12 kB bar next to a 9 MB one is invisible.
    rss = axes[1].bar(names, [result["rss_kb"][n] / 1024 for n in names],
                      color=[f"C{i}" for i in range(len(names))])
    axes[1].bar_label(rss, labels=[f"{result['rss_kb'][n]} kB" if result["rss_kb"][n] < 1024
                                   else f"{result['rss_kb'][n] / 1024:.1f} MB" for n in names],
                      fontsize=8)
    axes[1].set_ylabel("waiting init RSS (MB)")
    count = result["concurrent"][names[0]]["count"]
    conc = axes[2].bar(names, [result["concurrent"][n]["wall_s"] for n in names],
                       color=[f"C{i}" for i in range(len(names))])
    axes[2].bar_label(conc, fmt="%.2f s", fontsize=8)
    axes[2].set_ylabel(f"{count} concurrent starts (s)")
    fig.suptitle(f"ocirt vs runc vs crun, {result['date']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--concurrent", type=int, default=100)
    ap.add_argument("--runtime", action="append", default=[], metavar="NAME=PATH")
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
    # --runtime NAME=PATH adds a runtime or replaces the default one of that name.
    runtimes = {**default_runtimes(), **dict(r.split("=", 1) for r in args.runtime)}
    result = measure(args, runtimes)
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
