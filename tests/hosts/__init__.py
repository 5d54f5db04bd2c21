"""Test hosts of the users' kind, booted with qemu: the suite runs where ocirt's users
run it (cgroup v2, systemd as PID 1, AppArmor), not only on the developer's machine.

A host kind (`Kind`) is a Debian suite, the packages the checkout's own setup needs
(read from contrib/setup.sh and .ci/run, so the guest never needs a network) and a
kernel command line. `build` makes its disk image once and caches it, keyed by what
goes into it; `run` boots a throw-away overlay of that image with the checkout shared
read-only, runs one shell command in a copy of it as root, and returns its exit status
and output. The guest has no network device.

    python -m tests.hosts run [--kind debian12-v2] -- COMMAND...
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get("OCIRT_HOSTS_CACHE", "/var/cache/ocirt-hosts")


@dataclasses.dataclass(frozen=True)
class Kind:
    name: str
    suite: str
    packages: tuple[str, ...]  # besides what the checkout's setup installs
    cmdline: str
    disk_size: str = "12G"
    # units that would start at a random time and show up as the suite's leftovers
    masked: tuple[str, ...] = ("apt-daily.timer", "apt-daily-upgrade.timer", "man-db.timer",
                               "e2scrub_all.timer", "fstrim.timer", "logrotate.timer",
                               "dpkg-db-backup.timer", "systemd-tmpfiles-clean.timer")


KINDS = {
    "debian12-v2": Kind(
        name="debian12-v2", suite="bookworm",
        packages=("linux-image-amd64", "systemd", "systemd-sysv", "apparmor", "dbus", "udev",
                  "kmod", "e2fsprogs", "passwd",
                  # providers of virtual packages, which debootstrap does not resolve
                  "python3-cffi-backend", "netavark", "aardvark-dns",
                  # podman's Recommends, which a user's `apt install podman` brings (its
                  # --init; engine-smoke's podman scenarios need it)
                  "catatonit"),
        cmdline="systemd.unified_cgroup_hierarchy=1 apparmor=1 security=apparmor"),
}

# Baked into the image (a systemd unit at boot): mount the run's share and run the
# runner the harness put there, then power off. Everything that changes between runs
# lives in RUNNER, so editing it never rebuilds the image.
GUEST_BOOT = """#!/bin/sh
mkdir -p /mnt/out
if mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 out /mnt/out &&
   [ -f /mnt/out/runner.sh ]; then
    sh /mnt/out/runner.sh
else
    echo "ocirt-hosts: no runner on the out share" >/dev/console
fi
sync
systemctl poweroff --force
"""

GUEST_UNIT = """[Unit]
Description=Run the ocirt test command of the host harness
After=multi-user.target apparmor.service
Wants=multi-user.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/ocirt-hosts-run
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
"""

# Written to the share for each run: copy the checkout out of the read-only share, take
# a snapshot of units, cgroups and mounts, run the command, and record what it left.
RUNNER = """set -u
mkdir -p /mnt/src /work /mnt/out/files
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,ro src /mnt/src
while read -r tag dir; do  # the run's extra read-only shares (run(shares=...))
    mkdir -p "$dir" && mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,ro "$tag" "$dir"
done </mnt/out/shares
tar -C /mnt/src --exclude=./.venv --exclude=./.git -cf - . | tar -C /work -xf -
snapshot() {
    systemctl list-units --no-legend --plain --type=scope,slice,service,mount |
        awk '{print "unit " $1}' | grep -v -e '@' -e 'systemd-' -e '-.mount' \
            -e 'ocirt-hosts-run.service'
    find /sys/fs/cgroup -mindepth 1 -type d | sed 's/^/cgroup /'
    awk '{print "mount " $5}' /proc/self/mountinfo
}
snapshot | sort -u >/mnt/out/before
cd /work
export HOME=/root OCIRT_HOST_OUT=/mnt/out/files
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# systemd enables in cgroup.subtree_control only the controllers it manages; the others
# this kernel has (hugetlb, rdma, misc) are enabled down to system.slice, where the
# command's scope goes, as a node agent that sets their limits does (systemd leaves
# controllers it does not know alone), so that those limits are tested too.
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
    for d in /sys/fs/cgroup /sys/fs/cgroup/system.slice; do
        grep -qw "$c" "$d/cgroup.subtree_control" || echo "+$c" >"$d/cgroup.subtree_control"
    done
done
# The command runs as a CI job or a login session would: in a unit of its own with its
# cgroup delegated (Delegate=yes), itself in a leaf below it, so the delegated cgroup
# holds no processes and containers beside the leaf can get every controller.
systemd-run --quiet --scope --unit=ocirt-hosts-command -p Delegate=yes sh -c '
    cg=/sys/fs/cgroup$(sed -n "s/^0:://p" /proc/self/cgroup)
    mkdir "$cg/command" && echo $$ >"$cg/command/cgroup.procs" || exit 125
    exec sh /mnt/out/command.sh' >/mnt/out/output.log 2>&1 </dev/null
rc=$?
cd /
snapshot | sort -u >/mnt/out/after
comm -13 /mnt/out/before /mnt/out/after >/mnt/out/leftovers
echo $rc >/mnt/out/rc
sync
"""


def checkout_packages() -> list[str]:
    """The Debian packages contrib/setup.sh and .ci/run install (their arrays)."""
    found: list[str] = []
    for rel, array in (("contrib/setup.sh", "packages"), (".ci/run", "test_tools")):
        with open(os.path.join(REPO, rel)) as f:
            text = f.read()
        found += _bash_array(text, array)
    return found


def _bash_array(text: str, name: str) -> list[str]:
    """The words of `name=(...)` in a bash script, on one line or many (with comments)."""
    words: list[str] = []
    lines = iter(text.splitlines())
    for line in lines:
        if not line.startswith(f"{name}=("):
            continue
        rest = line[len(name) + 2:]
        while True:
            code = rest.split("#")[0]
            if ")" in code:
                return words + code[:code.index(")")].split()
            words += code.split()
            rest = next(lines, ")")
    return words


def all_packages(kind: Kind) -> list[str]:
    return sorted(set(kind.packages) | set(checkout_packages()))


def image_dir(kind: Kind) -> str:
    key = hashlib.sha256("\n".join([kind.suite, kind.disk_size, GUEST_BOOT, GUEST_UNIT,
                                    *kind.masked,
                                    *all_packages(kind)]).encode()).hexdigest()[:16]
    return os.path.join(CACHE, f"{kind.name}-{key}")


def host_mirror() -> str:
    """The Debian mirror this machine's apt uses (never one written into the repo)."""
    for path in ("/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"):
        try:
            with open(path) as f:
                text = f.read()
        except FileNotFoundError:
            continue
        match = re.search(r"^URIs:\s*(\S+)", text, re.M) or \
            re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+\S+\s+.*main", text, re.M)
        if match:
            return match.group(1)
    raise SystemExit("tests.hosts: no Debian mirror in this machine's apt sources")


def build(kind: Kind, log=print) -> str:
    """The cached image directory (disk.img, vmlinuz, initrd.img), built if missing."""
    directory = image_dir(kind)
    if os.path.exists(os.path.join(directory, "ready")):
        return directory
    os.makedirs(CACHE, exist_ok=True)
    with open(os.path.join(CACHE, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time: they share .partial
        if os.path.exists(os.path.join(directory, "ready")):
            return directory
        return _build(kind, directory, log)


def _build(kind: Kind, directory: str, log) -> str:
    for tool in ("debootstrap", "mke2fs", "qemu-system-x86_64", "qemu-img"):
        if shutil.which(tool) is None:
            raise SystemExit(f"tests.hosts: {tool} is missing (apt install debootstrap "
                             "e2fsprogs qemu-system-x86 qemu-utils)")
    partial = directory + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    root = os.path.join(partial, "root")
    os.makedirs(partial)
    started = time.monotonic()
    log(f"tests.hosts: debootstrap {kind.suite} with {len(all_packages(kind))} packages")
    debs = os.path.join(CACHE, "debs")  # downloaded packages, kept for the next build
    os.makedirs(debs, exist_ok=True)
    subprocess.run(["debootstrap", "--variant=minbase", f"--cache-dir={debs}",
                    "--include=" + ",".join(all_packages(kind)), kind.suite, root,
                    host_mirror()], check=True, stdout=subprocess.DEVNULL)
    configure_guest(kind, root)
    boot = os.path.join(root, "boot")
    for prefix, name in (("vmlinuz-", "vmlinuz"), ("initrd.img-", "initrd.img")):
        (found,) = [f for f in os.listdir(boot) if f.startswith(prefix)]
        shutil.copy(os.path.join(boot, found), os.path.join(partial, name))
    log("tests.hosts: making the disk image")
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-L", "root", "-d", root,
                    os.path.join(partial, "disk.img"), kind.disk_size], check=True)
    shutil.rmtree(root)
    with open(os.path.join(partial, "ready"), "w") as f:
        f.write(f"built in {time.monotonic() - started:.0f} s\n")
    os.rename(partial, directory)
    return directory


def configure_guest(kind: Kind, root: str) -> None:
    """What a booted machine needs that debootstrap does not do: a hostname, an fstab,
    no root password prompt on the console, and the runner unit enabled."""
    def write(rel: str, text: str, mode: int = 0o644) -> None:
        path = os.path.join(root, rel.lstrip("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)

    write("/etc/hostname", "ocirt-guest\n")
    write("/etc/hosts", "127.0.0.1 localhost ocirt-guest\n")
    write("/etc/fstab", "LABEL=root / ext4 rw,errors=remount-ro 0 1\n")
    write("/usr/local/sbin/ocirt-hosts-run", GUEST_BOOT, 0o755)
    write("/etc/systemd/system/ocirt-hosts-run.service", GUEST_UNIT)
    wants = os.path.join(root, "etc/systemd/system/multi-user.target.wants")
    os.makedirs(wants, exist_ok=True)
    link = os.path.join(wants, "ocirt-hosts-run.service")
    if not os.path.lexists(link):
        os.symlink("/etc/systemd/system/ocirt-hosts-run.service", link)
    # no getty on the serial console (its output is the boot log), no timers
    for unit in ("serial-getty@ttyS0.service", *kind.masked):
        mask = os.path.join(root, "etc/systemd/system", unit)
        if not os.path.lexists(mask):
            os.symlink("/dev/null", mask)


def accel() -> list[str]:
    """KVM where a guest really starts with it, else TCG (this kind of VM: nested KVM
    exists as /dev/kvm but guests never start)."""
    if os.environ.get("OCIRT_HOSTS_ACCEL") == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", "tcg,thread=multi", "-cpu", "max"]


@dataclasses.dataclass
class Result:
    rc: int  # the command's; 124 when the guest did not finish, 1 for leftovers
    output: str  # the command's stdout and stderr
    note: str = ""  # the harness's own finding: leftovers, or why there is no result


def share_dirs(shares: list[str], siblings: list[str] = ()) -> list[tuple[str, str]]:
    """(host directory, guest mount point) of each share: a host directory is mounted
    read-only at /mnt/shares/<its name> in the guest, e.g. a tools directory that is no
    part of the checkout; each of `siblings` at /<its name>, beside the guest's copy of
    the checkout (/work), for tests that read a directory next to the checkout."""
    pairs = []
    for share, where in [(s, "/mnt/shares/") for s in shares] + [(s, "/") for s in siblings]:
        path = os.path.abspath(share)
        if not os.path.isdir(path):
            raise SystemExit(f"tests.hosts: share {share}: not a directory")
        guest = where + os.path.basename(path.rstrip("/"))
        plain = re.fullmatch(r"/(mnt/shares/)?[\w.+-]+", guest)
        if guest in (g for _, g in pairs) or not plain or guest in RESERVED_SIBLINGS:
            raise SystemExit(f"tests.hosts: share {share}: its name must be unique and plain")
        pairs.append((path, guest))
    return pairs


# Guest directories a sibling must not hide.
RESERVED_SIBLINGS = {f"/{d}" for d in ("work", "mnt", "bin", "boot", "dev", "etc", "home",
                                       "lib", "lib64", "media", "opt", "proc", "root",
                                       "run", "sbin", "srv", "sys", "tmp", "usr", "var")}


def run(kind: Kind, command: str, checkout: str = REPO, timeout: float = 3600,
        keep: str | None = None, stream=None, shares: list[str] = (),
        siblings: list[str] = ()) -> Result:
    """Boot an overlay of the kind's image, run `command` (sh) in a copy of `checkout`
    as root, with each of `shares` and `siblings` mounted read-only (share_dirs). The
    output is passed to `stream` as it comes. A command that succeeded but left units,
    cgroups or mounts behind fails: the suite must clean up after itself."""
    image = build(kind)
    pairs = share_dirs(list(shares), list(siblings))
    work = tempfile.mkdtemp(prefix="ocirt-host-")
    out = os.path.join(work, "out")
    os.mkdir(out)
    listing = "".join(f"share{i} {guest}\n" for i, (_, guest) in enumerate(pairs))
    for name, text in (("command.sh", command + "\n"), ("runner.sh", RUNNER),
                       ("shares", listing)):
        with open(os.path.join(out, name), "w") as f:
            f.write(text)
    overlay = os.path.join(work, "overlay.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b",
                    os.path.join(image, "disk.img"), overlay], check=True)
    console = os.path.join(work, "console.log")
    argv = ["qemu-system-x86_64", *accel(), "-m", "4096", "-smp", "2", "-nographic",
            "-nic", "none", "-no-reboot", "-serial", f"file:{console}", "-monitor", "none",
            "-kernel", os.path.join(image, "vmlinuz"),
            "-initrd", os.path.join(image, "initrd.img"),
            "-append", f"root=LABEL=root rw console=ttyS0 {kind.cmdline}",
            "-drive", f"file={overlay},if=virtio,format=qcow2",
            "-virtfs", f"local,path={checkout},mount_tag=src,security_model=none,readonly=on",
            "-virtfs", f"local,path={out},mount_tag=out,security_model=none"]
    for i, (path, _) in enumerate(pairs):
        argv += ["-virtfs", f"local,path={path},mount_tag=share{i},security_model=none,"
                 "readonly=on"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        finished = _wait(proc, os.path.join(out, "output.log"), timeout, stream)
        result = _result(out, console, finished, proc.stderr.read().decode())
        if keep:
            shutil.copytree(os.path.join(out, "files"), keep, dirs_exist_ok=True)
            shutil.copy(console, keep)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)
    return result


def _wait(proc: subprocess.Popen, log: str, timeout: float, stream) -> bool:
    """Wait for the guest to power off, passing the command's output to `stream` as the
    guest writes it; False when it ran past `timeout` (then it is killed)."""
    deadline, offset = time.monotonic() + timeout, 0
    while True:
        try:
            proc.wait(timeout=2)
            done = True
        except subprocess.TimeoutExpired:
            done = False
        if stream is not None and os.path.exists(log):
            with open(log, "rb") as f:
                f.seek(offset)
                chunk = f.read()
            offset += len(chunk)
            if chunk:
                stream(chunk.decode(errors="replace"))
        if done:
            return True
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            return False


def _result(out: str, console: str, finished: bool, err: str) -> Result:
    """The command's status and output, the leftovers it made failing a passing run."""
    try:
        with open(os.path.join(out, "output.log"), errors="replace") as f:
            output = f.read()
        with open(os.path.join(out, "rc")) as f:
            rc = int(f.read().strip())
        with open(os.path.join(out, "leftovers")) as f:
            leftovers = f.read()
    except (FileNotFoundError, ValueError):
        with open(console, errors="replace") as f:
            tail = f.read()[-4000:]
        why = "did not finish in time" if not finished else "powered off without a result"
        return Result(124, "", f"tests.hosts: the guest {why}; console:\n{tail}\n{err[-2000:]}")
    if leftovers:
        return Result(rc or 1, output, "tests.hosts: the command left these behind in the "
                      f"guest:\n{leftovers}")
    return Result(rc, output)
