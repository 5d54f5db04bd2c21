#!/usr/bin/env python3
"""Import-heavy containers on slow shared storage: a plain directory tree against the same
tree in one SIF image (the seed's measurement).

    .venv/bin/python bench/shared/run.py [--n 1,8,32,64] [--rounds 3]     # as root
         [--latency-us 50] [--parallel-threads 16] [--models saturated,parallel]
         [--ways plain,image,bundle] [--shared-cpu] [--premounted] [--start-together]
         [--memory hot|cold|as-is]
         [--work /var/tmp/ocirt-bench-shared]
         [--out bench/results/shared]

N containers start at once, each running `python3 -c "import numpy, scipy.stats"` (about
700 modules from about 5000 files), and the wall time until the last one exits is taken.
Three ways to give them their root file system, all read from a slow shared file system
(bench/shared/slowfs.py: FUSE with a delay on every request, since this kernel has no
NFS server; see its docstring for what the kernel may cache):

  plain    the tree itself, as root.path of a bundle
  image    the SIF image with `ocirt run --image` per container (one shared, verified
           mount per image: ocirt.runtime.sharedroot)
  bundle   the SIF image mounted once by `ocirt sif bundle`, every container `run
           --bundle` of it

--premounted has a container of the image hold its mount before the image way's crowd
starts (as the bundle way's `sif bundle` is made beforehand): then no container waits
for a first one to mount the image, and the two ways differ only in what each container
does itself.

--start-together creates every container of a crowd first (the image way mounts its
image there) and then starts them all at once, timing from the starts until the last
container's process has exited: every way's crowd then begins at one instant, so that
what each container does can be told from how the crowd happens to be spread out (see
--memory and the timeline below).

The server runs at a real-time priority (--shared-cpu: at the containers' own), as a
file server on another machine does not share their CPUs (slowfs.py says why).

--latency-us is the delay slept per request; with the server's own work a small request
then takes about 100-125 µs here and a squashfs read of the image 200-400 µs (the table
reports the measured service time), the 100-200 µs of the seed's shared storage.

Two server models: `saturated` (one request at a time: a loaded file server, requests
queue) and `parallel` (--parallel-threads requests at once, each delayed). Every
measurement mounts the slow file system afresh, so each starts with a cold page cache
for it (nothing of another measurement is cached); the files it serves are read into
this machine's page cache first (`warm`), so that the delay is the model, not this
machine's disk. Rounds interleave the ways in turn (round 1: plain, image, bundle at
every N; round 2: image, bundle, plain; ...) and the medians are reported.

Free memory is a hidden variable on a VM that hands it back to its hypervisor (this one
does: touching a page it has given back costs about 5x touching one freed a moment ago,
`first_touch_cost` prints both): a measurement right after another found that one's
freed pages cheap, and a crowd that is alive all at once (more memory at its peak)
paid more system time than a staggered one for the same work. --memory sets the state
every measurement starts from (`prepare_memory`); each container's interpreter reports
when it started and finished importing, and the crowd's CPU is taken (the timeline
line under each measurement, `timelines` in results.json).

The whole run happens in a private mount + cgroup namespace (conformance.sandbox), as
bench/run.py does. Writes results.md, results.json and chart.png (python3-matplotlib)
to --out.
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

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

INSIDE = "OCIRT_BENCH_SHARED_INSIDE"
WAYS = ("plain", "image", "bundle")
IMPORT = ("import time; t0 = time.time(); import numpy, scipy.stats, sys; "
          "print('modules', len(sys.modules), 'started', t0, 'imported', time.time())")


def enter_sandbox(argv: list[str]) -> int:
    from conformance.sandbox import setup_lines

    script = "\n".join(setup_lines(hide_unified=True) + ['exec "$@"'])
    env = dict(os.environ, **{INSIDE: "1"})
    return subprocess.call(["unshare", "--mount", "--cgroup", "--propagation", "private",
                            "--", "bash", "-c", script, "bench", sys.executable,
                            os.path.abspath(__file__), *argv], env=env)


def ocirt_binary() -> str:
    """This checkout's ocirt (its venv), which is what is measured: /usr/local/bin/ocirt
    may run another checkout's code."""
    return os.path.join(REPO, ".venv", "bin", "ocirt")


class SlowFS:
    """bench/shared/slowfs.py serving BACKING on MOUNTPOINT for one measurement."""

    def __init__(self, backing: str, mountpoint: str, latency_us: float, threads: int,
                 shared_cpu: bool = False):
        self.argv = [sys.executable, os.path.join(HERE, "slowfs.py"), backing, mountpoint,
                     "--latency-us", str(latency_us), "--threads", str(threads),
                     *(["--shared-cpu"] if shared_cpu else [])]
        self.mountpoint = mountpoint
        self.requests = 0
        self.service_us = 0.0

    def __enter__(self) -> SlowFS:
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("slowfs did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["umount", self.mountpoint], check=False)
        try:
            out, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        for line in out.splitlines():
            if line.startswith("requests "):
                fields = line.split()
                self.requests, self.service_us = int(fields[1]), float(fields[3])


class MountWatch:
    """While the containers run: the most squashfs superblocks mounted below the state
    root and loop devices backed by the image seen at once (the shared mount's claim,
    checked where it matters: N containers of one image at once)."""

    def __init__(self, root: str, image: str) -> None:
        import threading

        self.root = os.path.realpath(root)
        self.image = os.path.realpath(image)
        self.mounts = self.loops = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> MountWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()

    def _watch(self) -> None:
        while not self.done.wait(0.05):
            self.mounts = max(self.mounts, len(self._squashfs()))
            self.loops = max(self.loops, len(self._loops()))

    def _squashfs(self) -> list[str]:
        with open("/proc/self/mountinfo") as f:
            return [line for line in f if line.split(" - ")[1].startswith("squashfs ")
                    and line.split()[4].startswith(self.root + "/")]

    def _loops(self) -> list[str]:
        import glob

        out = []
        for path in glob.glob("/sys/block/loop*/loop/backing_file"):
            try:
                with open(path) as f:
                    if f.read().strip() == self.image:
                        out.append(path)
            except OSError:
                continue
        return out


def start_all(ocirt: str, root: str, argvs: list[list[str]]) -> tuple[float, list[str], dict]:
    """Run every command at once; (wall seconds until the last exits, failures, the
    crowd's timeline: when its interpreters started and finished importing, seconds
    after the launch, and the CPU its reaped processes used)."""
    import resource

    with tempfile.TemporaryDirectory() as logs:
        files = [open(os.path.join(logs, str(i)), "w+") for i in range(len(argvs))]  # noqa: SIM115
        try:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            epoch, start = time.time(), time.perf_counter()
            procs = [subprocess.Popen([ocirt, "--root", root, *argv], stdout=f, stderr=f,
                                      stdin=subprocess.DEVNULL)
                     for argv, f in zip(argvs, files, strict=True)]
            for p in procs:
                p.wait()
            elapsed = time.perf_counter() - start
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            failures, starts, imports = [], [], []
            for p, f in zip(procs, files, strict=True):
                f.seek(0)
                text = f.read()
                if p.returncode != 0 or "modules" not in text:
                    failures.append(text[-300:])
                    continue
                fields = text.split()
                starts.append(float(fields[fields.index("started") + 1]) - epoch)
                imports.append(float(fields[fields.index("imported") + 1]) - epoch)
        finally:
            for f in files:
                f.close()
    timeline = {"started_s": spread(starts), "imported_s": spread(imports),
                "user_s": after.ru_utime - before.ru_utime,
                "sys_s": after.ru_stime - before.ru_stime}
    return elapsed, failures, timeline


def start_together(ocirt: str, root: str, argvs: list[list[str]]) -> tuple[float, list[str], dict]:
    """--start-together: `create` every container first (untimed: the image way mounts
    its image there), then `start` them all at once; (wall seconds from the starts until
    the last container's process has exited, failures, the timeline as `start_all`'s,
    with the whole machine's CPU from /proc/stat, since the containers' processes are
    not this one's children). Every container of the crowd begins at the same instant,
    whatever way it came in by."""
    import select

    creates = [["create", *argv[1:]] for argv in argvs]
    ids = [argv[3] for argv in argvs]
    with tempfile.TemporaryDirectory() as logs:
        files = [open(os.path.join(logs, str(i)), "w+") for i in range(len(argvs))]  # noqa: SIM115
        try:
            procs = [subprocess.Popen([ocirt, "--root", root, *argv], stdout=f, stderr=f,
                                      stdin=subprocess.DEVNULL)
                     for argv, f in zip(creates, files, strict=True)]
            failures = [f"create {cid}: exit {rc}" for p, cid in zip(procs, ids, strict=True)
                        if (rc := p.wait()) != 0]
            if failures:
                return 0.0, failures, {}
            pidfds = [os.pidfd_open(container_pid(ocirt, root, cid)) for cid in ids]
            before, epoch, start = machine_cpu(), time.time(), time.perf_counter()
            starts = [subprocess.Popen([ocirt, "--root", root, "start", cid],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
                      for cid in ids]
            poll = select.poll()
            for fd in pidfds:
                poll.register(fd, select.POLLIN)
            left = set(pidfds)
            while left:
                for fd, _ in poll.poll():
                    poll.unregister(fd)
                    left.discard(fd)
            elapsed = time.perf_counter() - start
            after = machine_cpu()
            failures = [f"start {cid}: exit {rc}" for p, cid in zip(starts, ids, strict=True)
                        if (rc := p.wait()) != 0]
            for fd in pidfds:
                os.close(fd)
            texts = read_all(files)
            failures += [text[-300:] for text in texts if "modules" not in text]
            marks = [text.split() for text in texts if "modules" in text]
        finally:
            for f in files:
                f.close()
            delete_all(ocirt, root, ids)
    timeline = {"started_s": spread([float(m[m.index("started") + 1]) - epoch for m in marks]),
                "imported_s": spread([float(m[m.index("imported") + 1]) - epoch
                                      for m in marks]),
                "user_s": after[0] - before[0], "sys_s": after[1] - before[1],
                "cpu_of": "machine"}
    return elapsed, failures, timeline


def read_all(files: list) -> list[str]:
    out = []
    for f in files:
        f.seek(0)
        out.append(f.read())
    return out


def container_pid(ocirt: str, root: str, cid: str) -> int:
    out = subprocess.run([ocirt, "--root", root, "state", cid], check=True,
                         capture_output=True, text=True).stdout
    return int(json.loads(out)["pid"])


def delete_all(ocirt: str, root: str, ids: list[str]) -> None:
    """`delete --force` the containers, all at once (while their image's file system is
    still there: a mount of it would hold it busy)."""
    procs = [subprocess.Popen([ocirt, "--root", root, "delete", "--force", cid],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for cid in ids]
    for p in procs:
        p.wait()


def machine_cpu() -> tuple[float, float]:
    """(user, system) CPU seconds this machine has spent, all CPUs (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:8]]
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice) / hz, (system + irq + softirq) / hz


def timeline_line(t: dict) -> str:
    def span(v: list[float]) -> str:
        return f"{v[0]:.2f}/{v[1]:.2f}/{v[2]:.2f} s" if v else "-"

    return (f"interpreters started {span(t['started_s'])}, imports done "
            f"{span(t['imported_s'])} (first/median/last after the launch); the "
            f"{'machine' if t.get('cpu_of') == 'machine' else 'crowd'}'s CPU "
            f"{t['user_s']:.1f} s user, {t['sys_s']:.1f} s system")


def spread(values: list[float]) -> list[float]:
    """[first, median, last], rounded: how a crowd's events spread over time."""
    if not values:
        return []
    return [round(x, 3) for x in (min(values), statistics.median(values), max(values))]


def touch_memory(mib: int) -> float:
    """Seconds to touch `mib` MiB of fresh anonymous memory (then freed)."""
    import mmap

    t = time.perf_counter()
    m = mmap.mmap(-1, mib << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for off in range(0, mib << 20, mmap.PAGESIZE):
        m[off] = 1
    m.close()
    return time.perf_counter() - t


def first_touch_cost() -> dict:
    """Seconds to touch 1 GiB of fresh anonymous memory after a pause and again at once.
    A VM that hands free memory back to its hypervisor (free page reporting, a balloon)
    pays a host fault on the first touch of every such page: here about 5x a page
    reused at once. A crowd whose peak memory is higher then pays more system time for
    the same work (the timeline's sys_s), and a measurement right after another one
    finds part of that one's freed memory still cheap: see --memory."""
    time.sleep(5)
    idle = touch_memory(1024)
    return {"gib": 1, "after_idle_s": round(idle, 3), "again_s": round(touch_memory(1024), 3)}


REPORTED = "/sys/module/page_reporting/parameters/reported_kib"


def prepare_memory(mode: str, n: int) -> None:
    """Put this machine's free memory into the same state before every measurement, so
    that no way finds the previous one's freed pages cheaper than the rest:
    `hot` touches (and frees) about what the crowd will use, as if it were a machine
    that keeps its memory (bare metal; the first seconds of the crowd then find it
    cheap), `cold` waits until the free memory has been handed back to the hypervisor
    (its page reporting counter stops for 2 s), `as-is` does neither."""
    if mode == "hot":
        touch_memory(max(256, 64 * n))
    elif mode == "cold" and os.path.exists(REPORTED):
        last, quiet, deadline = None, 0, time.monotonic() + 60
        while quiet < 4 and time.monotonic() < deadline:
            with open(REPORTED) as f:
                now = f.read().strip()
            quiet = quiet + 1 if now == last else 0
            last = now
            time.sleep(0.5)


def rotated(ways: list[str], r: int) -> list[str]:
    """Round r's order of the ways: each way follows another one in turn."""
    k = r % len(ways)
    return ways[k:] + ways[:k]


def plain_bundle(work: str, rootfs: str) -> str:
    from conformance.bundle import default_config

    bundle = os.path.join(work, "plain-bundle")
    os.makedirs(bundle, exist_ok=True)
    config = default_config(["/usr/bin/python3", "-c", IMPORT])
    config["linux"].pop("resources", None)
    config["root"] = {"path": rootfs, "readonly": True}
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(config, f)
    return bundle


def delete_leftovers(ocirt: str, state: str) -> None:
    """`delete --force` whatever a failed or killed run left in the state root: removing
    the directory alone would leave those containers' cgroups (and processes) behind."""
    for cid in os.listdir(state):
        if not cid.startswith("@"):
            subprocess.run([ocirt, "--root", state, "delete", "--force", cid], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def warm(path: str) -> None:
    """Read the backing files a way will serve (the tree, or the image) into this
    machine's page cache: the slow file system's server is modelled by its delay, not by
    this machine's disk, and other work here evicts them between measurements (the first
    measurement of a run came out 25-40% slower than the same way's later ones)."""
    files = [path] if os.path.isfile(path) else \
        [os.path.join(d, f) for d, _, names in os.walk(path) for f in names]
    for name in files:
        if os.path.isfile(name) and not os.path.islink(name):
            with open(name, "rb") as f:
                while f.read(1 << 20):
                    pass


def measure_one(way: str, n: int, model: str, args: argparse.Namespace, work: str,
                ocirt: str) -> dict:
    mnt = os.path.join(work, "mnt")
    warm(os.path.join(work, "backing", "rootfs" if way == "plain" else "app.sif"))
    state = tempfile.mkdtemp(dir=work, prefix="state-")
    # IDs no one else uses: a container's cgroup is named by its ID, and a hybrid
    # host's v1 hierarchies may put ours at their root, beside everyone's
    prefix = f"bsh{os.getpid()}-{way}-{n}-"
    threads = 1 if model == "saturated" else args.parallel_threads
    with SlowFS(os.path.join(work, "backing"), mnt, args.latency_us, threads,
                args.shared_cpu) as fs:
        image = os.path.join(mnt, "app.sif")
        sif_bundle = os.path.join(work, "sif-bundle")
        if way == "plain":
            bundle = plain_bundle(work, os.path.join(mnt, "rootfs"))
            argvs = [["run", "--bundle", bundle, f"{prefix}{i}"] for i in range(n)]
        elif way == "image":
            argvs = [["run", "--image", image, f"{prefix}{i}", "--", "/usr/bin/python3", "-c",
                      IMPORT] for i in range(n)]
        setup = 0.0  # the bundle way's `sif bundle` and `sif unbundle` (the premounted
        # image way's held container), outside `seconds`
        if way == "bundle":  # (run --image mounts and unmounts inside them)
            start = time.perf_counter()
            subprocess.run([ocirt, "sif", "bundle", image, sif_bundle, "--",
                            "/usr/bin/python3", "-c", IMPORT], check=True,
                           stdout=subprocess.DEVNULL)
            setup = time.perf_counter() - start
            argvs = [["run", "--bundle", sif_bundle, f"{prefix}{i}"] for i in range(n)]
        if way == "image" and args.premounted:  # a container of the image holds its
            start = time.perf_counter()
            subprocess.run([ocirt, "--root", state, "run", "-d", "--image", image,  # mount
                            f"{prefix}held", "--", "/bin/sleep", "3600"], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            setup = time.perf_counter() - start
        prepare_memory(args.memory, n)
        try:
            with MountWatch(state if way != "bundle" else sif_bundle, image) as watch:
                crowd = start_together if args.start_together else start_all
                elapsed, failures, timeline = crowd(ocirt, state, argvs)
        finally:
            if way == "image" and args.premounted:  # (before the slow file system goes)
                start = time.perf_counter()
                subprocess.run([ocirt, "--root", state, "delete", "--force", f"{prefix}held"],
                               check=False, stdout=subprocess.DEVNULL)
                setup += time.perf_counter() - start
            if way == "bundle":
                start = time.perf_counter()
                subprocess.run([ocirt, "sif", "unbundle", sif_bundle], check=False)
                setup += time.perf_counter() - start
    delete_leftovers(ocirt, state)
    shutil.rmtree(state, ignore_errors=True)
    if failures:
        raise RuntimeError(f"{way} N={n} {model}: {len(failures)} failed: {failures[0]}")
    return {"seconds": elapsed, "requests": fs.requests, "service_us": fs.service_us,
            "mounts": watch.mounts, "loops": watch.loops, "setup_s": setup,
            "timeline": timeline}


def measure(args: argparse.Namespace) -> dict:
    from rootfs import build_image, build_rootfs

    ocirt = args.ocirt or ocirt_binary()
    work = args.work
    backing = os.path.join(work, "backing")
    if not os.path.exists(os.path.join(backing, "app.sif")):
        shutil.rmtree(backing, ignore_errors=True)
        os.makedirs(backing)
        files = build_rootfs(os.path.join(backing, "rootfs"))
        build_image(os.path.join(backing, "rootfs"), os.path.join(backing, "app.sif"), ocirt)
        print(f"built the tree ({files} files) and its image", flush=True)
    os.makedirs(os.path.join(work, "mnt"), exist_ok=True)
    touch = first_touch_cost()
    print(f"this machine touches 1 GiB of fresh memory in {touch['after_idle_s']:.2f} s "
          f"after a pause, {touch['again_s']:.2f} s at once again", flush=True)
    ns = [int(x) for x in args.n.split(",")]
    models = args.models.split(",")
    samples: dict[str, list[dict]] = {}
    for r in range(args.rounds):
        for model in models:
            for n in ns:
                for way in rotated(args.ways.split(","), r):
                    one = measure_one(way, n, model, args, work, ocirt)
                    samples.setdefault(f"{model}/{n}/{way}", []).append(one)
                    print(f"round {r + 1} {model:9} N={n:<3} {way:6} {one['seconds']:7.2f} s "
                          f"{one['requests']:8} requests {one['service_us']:5.0f} µs each, "
                          f"{one['mounts']} squashfs mounts, {one['loops']} loop devices"
                          + (f", {one['setup_s']:.2f} s to bundle and unbundle"
                             if way == "bundle" else "")
                          + (f", {one['setup_s']:.2f} s to mount and unmount it beforehand"
                             if way == "image" and args.premounted else ""), flush=True)
                    print(f"        {timeline_line(one['timeline'])}", flush=True)
    results = {}
    for key, runs in samples.items():
        results[key] = {"median_s": statistics.median(x["seconds"] for x in runs),
                        "requests": statistics.median(x["requests"] for x in runs),
                        "service_us": statistics.median(x["service_us"] for x in runs),
                        "mounts": max(x["mounts"] for x in runs),
                        "loops": max(x["loops"] for x in runs),
                        "setup_s": statistics.median(x["setup_s"] for x in runs),
                        "runs": [x["seconds"] for x in runs],
                        "timelines": [x["timeline"] for x in runs]}
    return {"date": time.strftime("%Y-%m-%d"), "machine": machine(), "ns": ns,
            "models": models, "latency_us": args.latency_us,
            "parallel_threads": args.parallel_threads, "rounds": args.rounds,
            "server": "shared-cpu" if args.shared_cpu else "SCHED_FIFO",
            "premounted": args.premounted,
            "start_together": args.start_together, "first_touch": touch, "memory": args.memory,
            "ways": args.ways.split(","),
            "ocirt": ocirt, "results": results}


def machine() -> str:
    cpu = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{cpu}, {os.cpu_count()} CPUs, Linux {os.uname().release}"


def markdown(res: dict) -> str:
    plain = [v["service_us"] for k, v in res["results"].items() if k.endswith("/plain")]
    lines = [f"Measured {res['date']} on {res['machine']}; slow file system: "
             f"{res['latency_us']:.0f} µs delay per request (served in "
             f"{statistics.median(plain):.0f} µs), median of {res['rounds']} rounds; "
             "wall time until the last of N containers has imported numpy + scipy.stats.",
             "The bundle way's `sif bundle` and `sif unbundle` are outside its time (`run "
             "--image` mounts and unmounts inside its own); the last column counts them.",
             "", "| model | N | plain tree | `run --image` | one `sif bundle` | plain / image "
             "| image / bundle | image / (bundle + its setup) |",
             "|---|---|---|---|---|---|---|---|"]
    for model in res["models"]:
        label = model if model == "saturated" else \
            f"parallel ({res['parallel_threads']} at once)"
        for n in res["ns"]:
            r = {w: res["results"][f"{model}/{n}/{w}"] for w in WAYS}
            cells = [f"{r[w]['median_s']:.2f} s ({r[w]['requests']:.0f} req)" for w in WAYS]
            with_setup = r["bundle"]["median_s"] + r["bundle"].get("setup_s", 0.0)
            if "mounts" in r["image"]:  # the most seen at once while the N containers ran
                cells[1] += f", {r['image']['mounts']} mount, {r['image']['loops']} loop"
            lines.append(f"| {label} | {n} | {' | '.join(cells)} | "
                         f"{r['plain']['median_s'] / r['image']['median_s']:.1f}× | "
                         f"{r['image']['median_s'] / r['bundle']['median_s']:.2f} | "
                         f"{r['image']['median_s'] / with_setup:.2f} |")
    return "\n".join(lines) + "\n"


def chart(res: dict, path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(res["models"]), figsize=(5.5 * len(res["models"]), 4),
                             squeeze=False)
    for ax, model in zip(axes[0], res["models"], strict=True):
        for way, label in (("plain", "plain tree"), ("image", "run --image (SIF)"),
                           ("bundle", "one sif bundle")):
            ys = [res["results"][f"{model}/{n}/{way}"]["median_s"] for n in res["ns"]]
            ax.plot(res["ns"], ys, marker="o", label=label)
        ax.set_title(f"{model} server")
        ax.set_xlabel("containers started at once")
        ax.set_ylabel("seconds until the last has imported numpy+scipy")
        ax.set_xticks(res["ns"])
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", default="1,8,32,64")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--latency-us", type=float, default=50.0)
    p.add_argument("--parallel-threads", type=int, default=16)
    p.add_argument("--shared-cpu", action="store_true",
                   help="the slow file system's server at the containers' CPU priority "
                        "(default: real-time, as a server on another machine; see slowfs.py)")
    p.add_argument("--premounted", action="store_true",
                   help="the image way with the image already mounted by a container that "
                        "sleeps meanwhile (as the bundle way's sif bundle is made "
                        "beforehand): the crowd then starts without waiting for a first")
    p.add_argument("--start-together", action="store_true",
                   help="create every container first, then start them all at once")
    p.add_argument("--memory", choices=("hot", "cold", "as-is"), default="as-is",
                   help="the state of free memory each measurement starts from (see "
                        "prepare_memory): hot, as on a machine that keeps its memory; "
                        "cold, handed back to the hypervisor; as-is (default: the "
                        "rounds' rotation spreads what one way leaves to the next)")
    p.add_argument("--models", default="saturated,parallel")
    p.add_argument("--ways", default=",".join(WAYS), help="which of plain, image, bundle "
                   "to measure (a comparison of some of them; the table wants all three)")
    p.add_argument("--work", default="/var/tmp/ocirt-bench-shared")
    p.add_argument("--ocirt", default="", help="the ocirt to measure (default: this "
                   "checkout's .venv/bin/ocirt)")
    p.add_argument("--out", default=os.path.join(REPO, "bench", "results", "shared"))
    args = p.parse_args()
    if os.geteuid() != 0:
        print("bench/shared/run.py: run as root", file=sys.stderr)
        return 1
    if not os.environ.get(INSIDE):
        return enter_sandbox(sys.argv[1:])
    if not set(args.ways.split(",")) <= set(WAYS):
        print(f"bench/shared/run.py: --ways: choose from {','.join(WAYS)}", file=sys.stderr)
        return 2
    res = measure(args)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    if res["ways"] != list(WAYS):
        return 0  # the log above and results.json say it all
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(markdown(res))
    chart(res, os.path.join(args.out, "chart.png"))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
