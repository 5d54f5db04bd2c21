#!/usr/bin/env bash
# make-bundle.sh [--rootless] DIR [ARGS...]: an OCI bundle in DIR with a busybox-static
# root filesystem and ocirt's default config.json (no terminal), whose process runs ARGS
# (default: sh). --rootless writes the config `ocirt spec --rootless` makes (a user
# namespace mapping the caller to root), for an unprivileged user.
set -euo pipefail
spec_flags=()
if [ "${1:-}" = --rootless ]; then
    spec_flags=(--rootless)
    shift
fi
dir=${1:?usage: make-bundle.sh [--rootless] DIR [ARGS...]}
shift
busybox=$(command -v busybox || true)
[ -n "$busybox" ] || { echo "make-bundle.sh: busybox not found (apt install busybox-static)" >&2; exit 1; }
ocirt=${OCIRT:-$(command -v ocirt)}
rm -rf "$dir/rootfs" "$dir/config.json"
mkdir -p "$dir/rootfs/bin" "$dir/rootfs/etc" "$dir/rootfs/tmp" "$dir/rootfs/proc" \
         "$dir/rootfs/sys" "$dir/rootfs/dev" "$dir/rootfs/root"
cp "$busybox" "$dir/rootfs/bin/busybox"
for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$dir/rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$dir/rootfs/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\n' >"$dir/rootfs/etc/group"
(cd "$dir" && "$ocirt" spec "${spec_flags[@]}")
args_json=$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1:] or ["sh"]))' "$@")
python3 - "$dir/config.json" "$args_json" <<'PY'
import json, sys
path, args = sys.argv[1], json.loads(sys.argv[2])
config = json.load(open(path))
config["process"]["terminal"] = False
config["process"]["args"] = args
json.dump(config, open(path, "w"), indent=2)
PY
