#!/usr/bin/env bash
# Set up ocirt on a fresh Debian 12 machine and run a demo container.
#
#   ./contrib/setup.sh            as root: install everything, then run the demo container
#   ./contrib/setup.sh --no-demo  as root: install only
#
# Installs the Debian packages ocirt and its tests need, creates a virtual environment
# in .venv (from Debian's /usr/bin/python3, independent of any pyenv or user site),
# installs ocirt into it, links /usr/local/bin/ocirt, builds a demo bundle from
# busybox-static and runs it. It installs the man pages and the bash completion under
# /usr/local/share. It also creates the unprivileged user ocirt-test (subordinate
# ids 200000:65536) that the rootless tests run as, so the README's test command runs them.
# ocirt is installed editable: the venv and the launcher run the code of this checkout, so
# a change to ocirt/ needs no reinstall.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
demo=1
[ "${1:-}" = --no-demo ] && demo=0

if [ "$(id -u)" -ne 0 ]; then
    echo "setup.sh: run me as root: it installs Debian packages and /usr/local/bin/ocirt" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
packages=(
    # running ocirt: Python, libseccomp, and ocirt's Python dependencies from Debian
    # (no compiler, no PyPI access needed; the venv sees them as system site-packages)
    python3 python3-venv libseccomp2 ca-certificates
    python3-jsonschema python3-pyroute2 python3-cryptography
    python3-setuptools python3-wheel python3-pytest
    # the demo image, user namespaces, SIF images
    busybox-static uidmap squashfs-tools squashfuse fuse3 fuse-overlayfs
    # the tests: runc and crun as the reference runtimes (the conformance report compares
    # them), hypothesis for the fuzz tests, and the tools the tests drive
    runc crun python3-hypothesis
    procps util-linux iproute2 gnupg golang-go golang-github-sylabs-sif-dev
    # podman runs ocirt through contrib/podman/ocirt.conf in tests/engines; slirp4netns is
    # its rootless network (a Recommends, which --no-install-recommends leaves out)
    podman slirp4netns
    # --systemd-cgroup tests talk to a private bus
    dbus-daemon
    # bench/run.py's chart
    python3-matplotlib
    # `man ocirt` and tab completion of ocirt's commands, flags and container IDs
    man-db bash-completion
    # `ocirt checkpoint` / `restore` drive CRIU (tests/checkpoint); CRIU locks the
    # container's network with iptables-restore while it dumps (a Recommends of criu)
    criu iptables
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup.sh: installing ${missing[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Unprivileged FUSE mounts (squashfuse for SIF images) need /dev/fuse mode 0666, which
# udev sets on a normal system; machines without udev leave it root-only.
if [ -c /dev/fuse ]; then chmod 0666 /dev/fuse; fi

# An unprivileged user for the rootless tests (tests/rootless, the unprivileged SIF tests),
# with subordinate ids for newuidmap.
if ! id ocirt-test >/dev/null 2>&1; then
    useradd --create-home --shell /bin/bash ocirt-test
fi
grep -q '^ocirt-test:' /etc/subuid 2>/dev/null || echo 'ocirt-test:200000:65536' >>/etc/subuid
grep -q '^ocirt-test:' /etc/subgid 2>/dev/null || echo 'ocirt-test:200000:65536' >>/etc/subgid

# The virtual environment: Debian's interpreter (never a pyenv one), Debian's packages as
# its system site-packages, ocirt installed into it offline.
venv="$repo/.venv"
if [ ! -x "$venv/bin/python" ] ||
   ! grep -q '^include-system-site-packages = true' "$venv/pyvenv.cfg" 2>/dev/null; then
    rm -rf "$venv"
    /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
"$venv/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation \
    --no-index --editable "$repo"
# /usr/local/bin/ocirt: the same ocirt, started with `python -I -S` and its site
# directories written in (see ocirt/launcher.py): ~5 ms less for every engine call.
"$venv/bin/python" -I -m ocirt.launcher /usr/local/bin/ocirt
echo "setup.sh: $(/usr/local/bin/ocirt --version | head -1) installed as /usr/local/bin/ocirt"
# The man pages (ocirt(8), ocirt-COMMAND(8), generated from the command table) and the bash
# completion, where man and bash-completion look for locally installed software.
install -D -m 0644 -t /usr/local/share/man/man8 "$repo"/contrib/man/*.8
install -D -m 0644 "$repo/contrib/completions/bash/ocirt" \
    /usr/local/share/bash-completion/completions/ocirt
echo "setup.sh: man pages in /usr/local/share/man/man8 (man ocirt), bash completion in" \
    "/usr/local/share/bash-completion/completions/ocirt"

[ $demo = 1 ] || exit 0

bundle=${OCIRT_DEMO_BUNDLE:-/var/lib/ocirt/demo}
"$repo/contrib/make-bundle.sh" "$bundle" sh -c 'echo "hello from $(hostname)"; id'
id=demo-$$
echo "setup.sh: ocirt run --bundle $bundle $id"
ocirt run --bundle "$bundle" "$id"
