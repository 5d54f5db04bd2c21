"""contrib/containerd as a user applies it: appended to Debian's stock config file
(config.toml) or to `containerd config default` (ocirt.toml), and ocirt made the default
runtime with the README's sed. containerd's own parser reads every combination; the two
that the README does not tell a user to make are shown to fail the way that made two files
necessary. Two of them run pods for real."""

from __future__ import annotations

import json
import os
import subprocess
import tomllib

import pytest

from tests.conftest import REPO
from tests.cri import configs
from tests.cri.helpers import HANDLERS, OCIRT, assert_made_by, info, start

CONTRIB = os.path.join(REPO, "contrib", "containerd")
CRI = "io.containerd.grpc.v1.cri"


def dump(path: str) -> subprocess.CompletedProcess:
    return subprocess.run(["containerd", "--config", path, "config", "dump"],
                          capture_output=True, text=True, timeout=60)


def cri_runtimes(path: str) -> tuple[set[str], str]:
    """The CRI runtimes containerd makes of the file, and the default one."""
    r = dump(path)
    assert r.returncode == 0, r.stderr
    cri = tomllib.loads(r.stdout)["plugins"][CRI]["containerd"]
    return set(cri["runtimes"]), cri["default_runtime_name"]


def test_the_stock_copy_is_debians_conffile() -> None:
    r = subprocess.run(["dpkg-query", "-W", "-f=${Conffiles}\\n", "containerd"],
                       capture_output=True, text=True)
    recorded = dict(line.split()[:2] for line in r.stdout.splitlines() if line.strip())
    if configs.ETC_CONFIG not in recorded:
        pytest.skip("containerd is not Debian's package: no stock config file recorded")
    assert configs.md5(configs.DEBIAN_STOCK) == recorded[configs.ETC_CONFIG]


def test_readme_and_snippets_give_the_same_commands() -> None:
    readme = configs.read(configs.README)
    full, alone = (configs.read(os.path.join(CONTRIB, n)) for n in ("config.toml",
                                                                   "ocirt.toml"))
    for command in (configs.APPEND_TO_DEBIAN, configs.APPEND_TO_DEFAULT, configs.MAKE_DEFAULT):
        assert command in readme, command
    assert configs.APPEND_TO_DEBIAN in full and configs.MAKE_DEFAULT in full
    assert configs.APPEND_TO_DEFAULT in alone and configs.MAKE_DEFAULT in alone
    # The ocirt table is the same in both files.
    tables = [tomllib.loads(t)["plugins"][CRI]["containerd"]["runtimes"] for t in (full, alone)]
    assert tables[0]["ocirt"] == tables[1]["ocirt"]
    assert tables[0]["ocirt"]["options"]["BinaryName"] == "/usr/local/bin/ocirt"
    assert set(tables[0]) == {"runc", "ocirt"} and set(tables[1]) == {"ocirt"}


@pytest.mark.parametrize("make", [configs.debian_with_snippet, configs.default_with_snippet],
                         ids=["debian-stock", "config-default"])
def test_both_runtimes_and_the_default(tmp_path, make) -> None:
    path = make(str(tmp_path))
    assert cri_runtimes(path) == ({"runc", "ocirt"}, "runc")
    configs.run_readme_command(configs.MAKE_DEFAULT, path)
    assert cri_runtimes(path) == ({"runc", "ocirt"}, "ocirt")


def test_the_wrong_file_for_each_base(tmp_path) -> None:
    """Why two files: containerd replaces its built-in runtime list with the file's, so
    on Debian's stock file the runtime table alone loses runc (and the CRI plugin then
    refuses to load: its default runtime is runc); `containerd config default` has runc's
    tables already, so config.toml's repeat them."""
    stock = tmp_path / "stock.toml"
    stock.write_text(configs.read(configs.DEBIAN_STOCK) +
                     configs.read(os.path.join(CONTRIB, "ocirt.toml")))
    assert cri_runtimes(str(stock)) == ({"ocirt"}, "runc")
    default = tmp_path / "default.toml"
    default.write_text(configs.containerd_default() +
                       configs.read(os.path.join(CONTRIB, "config.toml")))
    r = dump(str(default))
    assert r.returncode != 0 and "duplicated tables" in r.stderr, r.stderr


def test_imports_replace_the_cri_section(tmp_path) -> None:
    """Why the README says to append rather than import: an imported file replaces the
    main file's whole CRI plugin section (here Debian's CNI bin_dir, and runc)."""
    imported = tmp_path / "ocirt.toml"
    imported.write_text("version = 2\n" + configs.read(os.path.join(CONTRIB, "ocirt.toml")))
    main = tmp_path / "config.toml"
    main.write_text(f'imports = ["{imported}"]\n' + configs.read(configs.DEBIAN_STOCK))
    r = dump(str(main))
    assert r.returncode == 0, r.stderr
    cri = tomllib.loads(r.stdout)["plugins"][CRI]
    assert tomllib.loads(configs.read(configs.DEBIAN_STOCK))["plugins"][CRI]["cni"][
        "bin_dir"] == "/usr/lib/cni"
    assert cri["cni"]["bin_dir"] != "/usr/lib/cni"
    assert set(cri["containerd"]["runtimes"]) == {"ocirt"}


def run_one_container(env, handler: str) -> str:
    pod = env.pod(handler)
    cid = start(pod, "c", ["sleep", "300"])
    assert_made_by(env, handler or OCIRT, cid, info(env, cid)["pid"])
    return cid


@pytest.mark.root
def test_config_default_with_ocirt_toml_runs_pods(cri_env_factory, pods_removed,
                                                   tmp_path) -> None:
    env = cri_env_factory(configs.default_with_snippet(str(tmp_path)))
    pods_removed.append(env)
    config = json.loads(env.rt.Status(env.pb.StatusRequest(verbose=True)).info["config"])
    assert set(config["containerd"]["runtimes"]) == {"runc", "ocirt"}
    for handler in HANDLERS:
        run_one_container(env, handler)


@pytest.mark.root
def test_ocirt_as_the_default_runtime(cri_env_factory, pods_removed, tmp_path) -> None:
    """After the README's sed, a pod naming no RuntimeClass runs under ocirt; runc stays
    available by name."""
    path = configs.debian_with_snippet(str(tmp_path))
    configs.run_readme_command(configs.MAKE_DEFAULT, path)
    env = cri_env_factory(path)
    pods_removed.append(env)
    run_one_container(env, "")
    run_one_container(env, "runc")
