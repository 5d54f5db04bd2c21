"""The containerd configurations the CRI tests load, made the way the README tells a
user to make them: Debian's stock /etc/containerd/config.toml with
contrib/containerd/config.toml appended, or `containerd config default` with
contrib/containerd/ocirt.toml appended, and the README's sed for ocirt as the default
runtime. The README commands are run as written, on a copy of the file."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess

from tests.conftest import REPO

HERE = os.path.dirname(os.path.abspath(__file__))
# A copy of the conffile Debian 12's containerd package installs (its md5 is checked
# against dpkg's record in test_configs.py).
DEBIAN_STOCK = os.path.join(HERE, "debian-stock-config.toml")
ETC_CONFIG = "/etc/containerd/config.toml"
README = os.path.join(REPO, "README.md")

APPEND_TO_DEBIAN = "cat contrib/containerd/config.toml >>/etc/containerd/config.toml"
APPEND_TO_DEFAULT = "cat contrib/containerd/ocirt.toml >>/etc/containerd/config.toml"
MAKE_DEFAULT = ("sed -i 's/default_runtime_name = \"runc\"/default_runtime_name = \"ocirt\"/'"
                " /etc/containerd/config.toml")
INSTALLED_BINARY = 'BinaryName = "/usr/local/bin/ocirt"'


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def md5(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()


def run_readme_command(command: str, config: str) -> None:
    """Run a README command in the checkout with /etc/containerd/config.toml replaced by
    `config` (nothing else changed)."""
    assert command.count(ETC_CONFIG) == 1
    r = subprocess.run(["sh", "-c", command.replace(ETC_CONFIG, config)], cwd=REPO,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"{command}: {r.stderr}"


def containerd_default() -> str:
    return subprocess.run(["containerd", "config", "default"], capture_output=True,
                          text=True, check=True, timeout=60).stdout


def has_cap_sys_resource() -> bool:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> 24 & 1)
    return False


CRI_TABLE = re.compile(r'(?m)^(\s*)\[plugins\."io\.containerd\.grpc\.v1\.cri"\]\s*$')


def for_this_machine(text: str, ocirt_bin: str) -> str:
    """What the tests change in a user's file: the runtime binary is the checkout's ocirt
    (the README's is /usr/local/bin/ocirt), and where this process lacks
    CAP_SYS_RESOURCE (a VM like the one the tests are written on), neither runc nor ocirt
    may lower the pod sandbox's oom_score_adj to containerd's -998, so the CRI plugin's
    restrict_oom_score_adj (meant for exactly that, e.g. rootless containerd) is set."""
    assert text.count(INSTALLED_BINARY) == 1, "the file names /usr/local/bin/ocirt once"
    text = text.replace(INSTALLED_BINARY, f'BinaryName = "{ocirt_bin}"')
    if has_cap_sys_resource():
        return text
    if "restrict_oom_score_adj = false" in text:
        return text.replace("restrict_oom_score_adj = false", "restrict_oom_score_adj = true")
    text, n = CRI_TABLE.subn(r"\g<0>\n\1  restrict_oom_score_adj = true", text, count=1)
    assert n == 1, "no CRI plugin table to set restrict_oom_score_adj in"
    return text


def debian_with_snippet(directory: str) -> str:
    """Debian's stock file with contrib/containerd/config.toml appended, as the README
    says; returns the path of the result."""
    path = os.path.join(directory, "debian-config.toml")
    with open(path, "w") as f:
        f.write(read(DEBIAN_STOCK))
    run_readme_command(APPEND_TO_DEBIAN, path)
    return path


def default_with_snippet(directory: str) -> str:
    """`containerd config default` with contrib/containerd/ocirt.toml appended."""
    path = os.path.join(directory, "default-config.toml")
    with open(path, "w") as f:
        f.write(containerd_default())
    run_readme_command(APPEND_TO_DEFAULT, path)
    return path


def ocirt_binary_of(config_path: str) -> str:
    """The ocirt the adapted file points the shim at."""
    m = re.search(r'BinaryName = "([^"]+)"', read(config_path))
    assert m, config_path
    return m.group(1)
