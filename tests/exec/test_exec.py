"""`exec`: namespaces, cgroup, flags, process.json, exit codes, terminal modes."""

from __future__ import annotations

import json
import os
import pty
import subprocess

import pytest

from tests.terminal.test_console import ConsoleReceiver, read_all

pytestmark = pytest.mark.root


@pytest.fixture
def running(ocirt, bundle):
    """A running container `c1` (sleep) and its init PID."""
    ocirt("run", "-d", "--bundle", bundle(["sleep", "1000"]), "c1", check=True)
    return ocirt.state("c1")["pid"]


def test_output_and_exit_status(ocirt, running):
    r = ocirt("exec", "c1", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert (r.rc, r.out, r.err) == (7, "out\n", "err\n")
    assert ocirt("exec", "c1", "sh", "-c", "kill -9 $$").rc == 137


def test_joins_every_namespace_and_the_cgroup(ocirt, running, tmp_path):
    pidfile = tmp_path / "pid"
    ocirt("exec", "-d", "--pid-file", str(pidfile), "c1", "sleep", "100", check=True)
    pid = int(pidfile.read_text())
    for ns in ("pid", "mnt", "net", "ipc", "uts"):
        assert os.readlink(f"/proc/{pid}/ns/{ns}") == os.readlink(f"/proc/{running}/ns/{ns}")
    with open(f"/proc/{pid}/cgroup") as a, open(f"/proc/{running}/cgroup") as b:
        assert a.read() == b.read()
    assert os.readlink(f"/proc/{pid}/root") == os.readlink(f"/proc/{running}/root")
    with open(f"/proc/{pid}/status") as f:
        status = f.read()
    assert "NoNewPrivs:\t1" in status  # inherited from the container's process


def _namespaces(*kinds: str):
    """A config edit adding namespaces: a user namespace mapping 0-65535 to 100000-,
    a time namespace whose boot clock is 10^6 s ahead."""
    def edit(cfg: dict) -> None:
        cfg["linux"]["namespaces"] += [{"type": k} for k in kinds]
        if "user" in kinds:
            ids = [{"containerID": 0, "hostID": 100000, "size": 65536}]
            cfg["linux"].update(uidMappings=ids, gidMappings=ids)
        if "time" in kinds:
            cfg["linux"]["timeOffsets"] = {"boottime": {"secs": 1000000, "nanosecs": 0}}
    return edit


@pytest.mark.parametrize("kinds", [("user",), ("time",), ("user", "time")])
def test_joins_user_and_time_namespaces(ocirt, open_bundle, tmp_path, kinds):
    """`exec` forks the process straight into the container's pid namespace (it joins
    that namespace for the one fork), except with a time namespace, which applies only
    to children too: then an intermediate joins all and forks it. Either way the
    process is in every namespace of the init, the user namespace's ids and the time
    namespace's clocks included."""
    b = open_bundle(["sleep", "1000"], edit=_namespaces(*kinds))
    ocirt("run", "-d", "--bundle", b, "c1", check=True)
    init = ocirt.state("c1")["pid"]
    pidfile = tmp_path / "pid"
    ocirt("exec", "-d", "--pid-file", str(pidfile), "c1", "sleep", "100", check=True)
    pid = int(pidfile.read_text())
    for ns in ("pid", "mnt", "net", "ipc", "uts", *(("user",) if "user" in kinds else ()),
               *(("time",) if "time" in kinds else ())):
        assert os.readlink(f"/proc/{pid}/ns/{ns}") == os.readlink(f"/proc/{init}/ns/{ns}"), ns
    with open(f"/proc/{pid}/status") as f:
        nspid = next(line for line in f if line.startswith("NSpid:")).split()[1:]
    assert len(nspid) == 2 and nspid[0] == str(pid) and int(nspid[1]) > 1
    r = ocirt("exec", "c1", "sh", "-c", "cat /proc/self/uid_map; cut -d. -f1 /proc/uptime")
    assert r.rc == 0, r.err
    uid_map, uptime = r.out.splitlines()[-2:] if "user" in kinds else ("", r.out.split()[-1])
    if "user" in kinds:
        assert uid_map.split() == ["0", "100000", "65536"]
    assert (int(uptime) > 1000000) == ("time" in kinds), uptime


def test_flags_override_the_container_process(ocirt, running):
    r = ocirt("exec", "--cwd", "/tmp", "-e", "EXTRA=1", "-u", "1000:1000", "-g", "5",
              "-g", "65534", "c1", "sh", "-c", "pwd; echo $EXTRA $PATH; id -u; id -g; id -G",
              check=True)
    lines = r.out.splitlines()
    assert lines[0] == "/tmp"
    assert lines[1].startswith("1 /usr/local/sbin")
    assert lines[2:4] == ["1000", "1000"]
    assert set(lines[4].split()) == {"1000", "5", "65534"}


def test_cap_flag_never_sets_inheritable(ocirt, running):
    """CVE-2022-29162: exec --cap adds to bounding/effective/permitted, not inheritable."""
    r = ocirt("exec", "--cap", "CAP_NET_ADMIN", "c1", "grep", "Cap", "/proc/self/status",
              check=True)
    caps = dict(line.split(":\t") for line in r.out.splitlines())
    net_admin = 1 << 12
    assert int(caps["CapInh"], 16) == 0
    assert int(caps["CapEff"], 16) & net_admin and int(caps["CapBnd"], 16) & net_admin
    assert int(caps["CapAmb"], 16) & ~int(caps["CapInh"], 16) == 0


def test_process_json(ocirt, running, tmp_path):
    proc = {"args": ["sh", "-c", "echo $FOO; id -u; pwd"], "env": ["FOO=bar", "PATH=/bin"],
            "cwd": "/etc", "user": {"uid": 65534, "gid": 65534}, "terminal": False}
    path = tmp_path / "process.json"
    path.write_text(json.dumps(proc))
    r = ocirt("exec", "--process", str(path), "c1", check=True)
    assert r.out.splitlines() == ["bar", "65534", "/etc"]


def test_bad_process_json_names_the_field(ocirt, running, tmp_path):
    path = tmp_path / "process.json"
    path.write_text(json.dumps({"args": [], "cwd": "/"}))
    r = ocirt("exec", "-p", str(path), "c1")
    assert r.rc == 255 and "process.args: args must not be empty" in r.err


def test_missing_binary_and_stopped_container(ocirt, running):
    r = ocirt("exec", "c1", "no-such-thing")
    assert r.rc == 255 and "executable file not found in $PATH" in r.err
    ocirt("kill", "c1", "KILL", check=True)
    assert ocirt.wait_status("c1", "stopped")
    r = ocirt("exec", "c1", "true")
    assert r.rc == 255 and "cannot exec in a stopped container" in r.err
    assert ocirt("exec", "nope", "true").rc == 255


def test_detached_process_outlives_exec(ocirt, running, tmp_path):
    pidfile = tmp_path / "pid"
    ocirt("exec", "-d", "--pid-file", str(pidfile), "c1", "sleep", "100", check=True)
    text = pidfile.read_text()
    assert text.isdigit()  # runc writes no newline
    assert os.path.exists(f"/proc/{int(text)}")


def test_console_socket_mode(ocirt, running, tmp_path):
    receiver = ConsoleReceiver(tmp_path)
    try:
        ocirt("exec", "-d", "-t", "--console-socket", receiver.path, "c1", "sh", "-c",
              "tty; [ -t 0 ] && echo tty-ok", check=True)
        master, _ = receiver.receive()
    finally:
        receiver.close()
    try:
        out = read_all(master).replace("\r", "")
    finally:
        os.close(master)
    assert out.splitlines()[0].startswith("/dev/pts/") and "tty-ok" in out


def test_foreground_new_pty_relay(ocirt_bin, state_root, running):
    """CRI-O's `kubectl exec`: foreground, a terminal, no console socket."""
    pid, master = pty.fork()
    if pid == 0:
        os.execv(ocirt_bin, [ocirt_bin, "--root", state_root, "exec", "-t", "c1", "sh", "-c",
                             "tty; exit 3"])
    try:
        out = read_all(master)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(master)
    assert os.waitstatus_to_exitcode(status) == 3
    assert "/dev/pts/" in out


def test_foreground_pass_through_stdin(ocirt_bin, state_root, running):
    r = subprocess.run([ocirt_bin, "--root", state_root, "exec", "c1", "sh", "-c",
                        "read x; echo got:$x"], input="hello\n", capture_output=True, text=True,
                       timeout=30)
    assert (r.returncode, r.stdout) == (0, "got:hello\n")


def test_stray_fds_stay_out_of_exec(ocirt_bin, state_root, running, tmp_path):
    leak = os.open(str(tmp_path), os.O_RDONLY | os.O_DIRECTORY)
    try:
        r = subprocess.run([ocirt_bin, "--root", state_root, "exec", "c1", "ls", "/proc/self/fd"],
                           capture_output=True, text=True, pass_fds=(leak,), timeout=30)
    finally:
        os.close(leak)
    assert set(r.stdout.split()) <= {"0", "1", "2", "3"}


def test_exec_into_a_created_container(ocirt, bundle):
    ocirt("create", "--bundle", bundle(["sleep", "1000"]), "c2", check=True)
    r = ocirt("exec", "c2", "echo", "in-created")
    assert r.rc == 0 and r.out == "in-created\n"
    assert ocirt.state("c2")["status"] == "created"


def test_signals_reach_a_foreground_exec(ocirt_bin, state_root, running):
    proc = subprocess.Popen([ocirt_bin, "--root", state_root, "exec", "c1", "sh", "-c",
                             "trap 'exit 44' TERM; echo ready; while :; do sleep 0.1; done"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.terminate()
        assert proc.wait(10) == 44
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
