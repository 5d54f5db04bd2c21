"""ocirt.launcher: the /usr/local/bin/ocirt that contrib/setup.sh writes starts Python with
-I -S and its site directories written in: it runs containers, and the caller's
PYTHONPATH (or a sitecustomize found there) never gets into a root runtime."""

from __future__ import annotations

import os
import subprocess

import pytest

from ocirt import launcher


@pytest.fixture
def fast(tmp_path, ocirt_bin):
    """A launcher written by the interpreter of the ocirt under test."""
    with open(ocirt_bin) as f:
        python = f.readline()[2:].split()[0]
    dest = str(tmp_path / "ocirt")
    subprocess.run([python, "-I", "-m", "ocirt.launcher", dest], check=True,
                   cwd=str(tmp_path))
    return dest


def test_launcher_shape(fast):
    with open(fast) as f:
        first = f.readline()
    assert first.startswith("#!/") and first.rstrip().endswith(" -IS")
    assert os.access(fast, os.X_OK)
    r = subprocess.run([fast, "--version"], capture_output=True, text=True, env={})
    assert r.returncode == 0 and r.stdout.startswith("ocirt version"), r


def test_callers_python_environment_is_ignored(fast, tmp_path):
    evil = tmp_path / "evil"
    evil.mkdir()
    marker = tmp_path / "imported"
    (evil / "sitecustomize.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    (evil / "ocirt").mkdir()
    (evil / "ocirt" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('y')\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(evil), "PYTHONHOME": str(evil)}
    r = subprocess.run([fast, "--version"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert not marker.exists(), "code from the caller's PYTHONPATH ran"


@pytest.mark.root
def test_launcher_runs_a_container(fast, bundle, state_root):
    b = bundle(["sh", "-c", "echo inside $(id -u)"])
    r = subprocess.run([fast, "--root", state_root, "run", "--bundle", b, "c1"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert (r.returncode, r.stdout) == (0, "inside 0\n"), r


def test_refuses_an_interpreter_path_with_spaces(tmp_path):
    with pytest.raises(OSError, match="spaces"):
        launcher.write(str(tmp_path / "x"), python="/opt/my python/bin/python3")
    assert not (tmp_path / "x").exists()


def _pip_script(tmp_path, ocirt_bin) -> str:
    """bin/ocirt as `pip install` writes it: the interpreter's path on its #! line."""
    with open(ocirt_bin) as f:
        python = f.readline()[2:].split()[0]
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(repo, "bin", "ocirt")) as f:
        source = f.read()
    dest = tmp_path / "ocirt"
    dest.write_text(source.replace("#!python\n", f"#!{python}\n", 1))
    dest.chmod(0o755)
    return str(dest)


def test_pip_script_becomes_the_launcher(tmp_path, ocirt_bin):
    script = _pip_script(tmp_path, ocirt_bin)
    for _ in range(2):  # the first run rewrites the file, the second runs the launcher
        r = subprocess.run([script, "--version"], capture_output=True, text=True, env={})
        assert r.returncode == 0 and r.stdout.startswith("ocirt version"), r
    with open(script) as f:
        assert f.readline().rstrip().endswith(" -IS")
    assert sorted(os.listdir(tmp_path)) == ["ocirt"], "a staged launcher was left behind"
    assert os.access(script, os.X_OK)


@pytest.mark.root
def test_pip_script_of_another_owner_is_left_alone(tmp_path, ocirt_bin):
    script = _pip_script(tmp_path, ocirt_bin)
    os.chown(script, 65534, 65534)
    with open(script) as f:
        before = f.read()
    r = subprocess.run([script, "--version"], capture_output=True, text=True, env={})
    assert r.returncode == 0 and r.stdout.startswith("ocirt version"), r
    with open(script) as f:
        assert f.read() == before
