"""A failed `exec` exits 255, as runc's does, so that engines tell "could not start"
from "the process exited 1"; a hostile process.json is refused with one line naming the
field. Each case runs under ocirt and, where installed, under runc for the exit code."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

pytestmark = pytest.mark.root


def _process_file(tmp_path, name: str, doc) -> str:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(path)


def _check(rt, r, rc: int, words: str = "") -> None:
    assert r.rc == rc, (rt.name, r)
    if rt.name.startswith("ocirt") and rc == 255:
        err = r.err.strip()
        assert err.count("\n") == 0 and "Traceback" not in err, err
        assert "internal error" not in err and words in err, err


def test_exit_codes_match_runc(runtimes, tmp_path):
    bad = _process_file(tmp_path, "bad.json", "{bad")
    empty = _process_file(tmp_path, "empty.json", {"args": [], "cwd": "/"})
    for rt, cid in runtimes:
        _check(rt, rt("exec", cid, "sh", "-c", "exit 1"), 1)  # the process's own status
        _check(rt, rt("exec", cid, "/no/such/program"), 255, "no such file or directory")
        _check(rt, rt("exec", cid, "no-such-program"), 255, "executable file not found")
        _check(rt, rt("exec", "-p", bad, cid), 255, "invalid JSON")
        _check(rt, rt("exec", "-p", empty, cid), 255, "process.args")
        _check(rt, rt("exec", "-p", str(tmp_path / "missing.json"), cid), 255, "not found")
        _check(rt, rt("exec", "--cwd", "/nope", cid, "true"), 255, "chdir to cwd")
        _check(rt, rt("exec", "no-such-container", "true"), 255, "container does not exist")
        assert rt("exec").rc == 1  # usage errors keep runc's 1
        rt("kill", cid, "KILL", check=True)
        assert rt.wait_status(cid, "stopped")
        _check(rt, rt("exec", cid, "true"), 255, "cannot exec in a stopped container")


@pytest.mark.parametrize("doc, field, runc_refuses", [
    ({"args": ["true\0"], "cwd": "/"}, "process.args[0]: contains a NUL byte", True),
    ({"args": ["true"], "cwd": "/", "env": ["A=\ud800"]},
     "process.env[0]: contains a lone surrogate", False),
    ({"args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0,
                                             "additionalGids": list(range(70000))}},
     "process.user.additionalGids: 70000 groups", True),
    ({"args": ["true"], "cwd": "/", "x": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[
        [[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]},
     "nested more than 64 levels deep", False),
    ('{"args": ["true"], "cwd": "/", "x": ' + "[" * 100000 + "]" * 100000 + "}",
     "nested too deeply", False),
], ids=["nul", "surrogate", "gids", "nested", "recursion"])
def test_hostile_process_json(runtimes, tmp_path, doc, field, runc_refuses):
    path = _process_file(tmp_path, "process.json", doc)
    for rt, cid in runtimes:
        if rt.name.startswith("ocirt") or runc_refuses:
            _check(rt, rt("exec", "-p", path, cid), 255, field)


def test_process_json_fifo_without_writer_does_not_hang(ocirt, runtimes, tmp_path):
    fifo = str(tmp_path / "process.fifo")
    os.mkfifo(fifo)
    try:
        r = ocirt("exec", "-p", fifo, "c1", timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("ocirt exec blocked on a FIFO process.json without a writer")
    _check(ocirt, r, 255, "invalid JSON")


def test_process_json_from_a_pipe(ocirt_bin, state_root, runtimes):
    """`--process /dev/stdin` (a pipe) still works: only the open must not block."""
    doc = json.dumps({"args": ["/bin/sh", "-c", "echo piped"], "cwd": "/"})
    r = subprocess.run([ocirt_bin, "--root", state_root, "exec", "-p", "/dev/stdin", "c1"],
                       input=doc, capture_output=True, text=True, timeout=30)
    assert (r.returncode, r.stdout) == (0, "piped\n"), r


def test_non_utf8_command_line_is_refused_in_one_line(ocirt, runtimes):
    raw = os.fsdecode(b"\xff\xfe")  # the bytes as Python's argv holds them
    for args, words in ((("c1", "echo", raw), "argument 2 b'\\\\xff\\\\xfe'"),
                        (("--env", "A=" + raw, "c1", "true"), "--env b'A=\\\\xff")):
        r = ocirt("exec", *args)
        _check(ocirt, r, 255, words)
        assert "is not UTF-8 text" in r.err
