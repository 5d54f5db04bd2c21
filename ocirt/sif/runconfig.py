"""config.json for a SIF image: what the image says about how to run it.

Two kinds of images carry that knowledge differently:

- Singularity images keep it as shell code in `/.singularity.d`: environment scripts
  (`env/*.sh`) and a runscript, applied by the action scripts (`actions/run`,
  `actions/exec`). Evaluating shell statically would be wrong, so the process runs
  through the action script, exactly as Singularity does; labels
  (`/.singularity.d/labels.json`) become annotations.
- Images built from OCI images carry the OCI image config (JSON object
  `oci-config.json`): Entrypoint + Cmd become the process, Env, WorkingDir and User
  apply as a container engine would apply them, Labels become annotations.

Every file is read from the root file system through openat2(RESOLVE_IN_ROOT): an image
is untrusted, and a symlink in it must not make ocirt read a host file into config.json.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ocirt import jsonio
from ocirt.sif.image import SIFError

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_ACTIONS = "/.singularity.d/actions"
_SOURCE_ENV = ('for s in /.singularity.d/env/*.sh; do if [ -f "$s" ]; then . "$s"; fi; '
               "done; ")


@dataclass
class ImageMetadata:
    """What the SIF file itself (outside the root file system) says."""

    image_path: str
    oci_config: dict[str, Any] | None = None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class RunOptions:
    args: list[str] = field(default_factory=list)
    exec_args: bool = False
    terminal: bool = False
    readonly: bool = True
    rootless: bool = False


def read_in_root(rootfs: str, path: str, limit: int = 1 << 20) -> bytes | None:
    """A file of the image, resolved inside `rootfs`; None when it is missing or not a
    regular file."""
    import stat

    from ocirt.fs.resolve import open_in_root

    try:
        root = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise SIFError(f"open rootfs {rootfs}: {exc.strerror}") from None
    try:
        fd = open_in_root(root, path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    finally:
        os.close(root)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit)
    finally:
        os.close(fd)


def _stat_in_root(rootfs: str, path: str) -> os.stat_result | None:
    """stat of `path` resolved inside `rootfs` (symlinks cannot leave it), or None."""
    from ocirt.fs.resolve import open_in_root
    from ocirt.linux import consts as c

    root = os.open(rootfs, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = open_in_root(root, path, getattr(os, "O_PATH", c.O_PATH))
    except OSError:
        return None
    finally:
        os.close(root)
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def exists_in_root(rootfs: str, path: str) -> bool:
    return _stat_in_root(rootfs, path) is not None


def _executable_in_root(rootfs: str, path: str) -> bool:
    import stat

    st = _stat_in_root(rootfs, path)
    return st is not None and stat.S_ISREG(st.st_mode) and bool(st.st_mode & 0o111)


def build_config(rootfs: str, meta: ImageMetadata, opts: RunOptions) -> dict[str, Any]:
    """The whole config.json for a bundle whose root is `rootfs`."""
    from ocirt.spec.template import default_spec

    config = default_spec(rootless=opts.rootless)
    process = config["process"]
    process["terminal"] = opts.terminal
    config["root"] = {"path": "rootfs", "readonly": opts.readonly}
    config["hostname"] = "ocirt"
    annotations = {"org.opencontainers.image.source": meta.image_path}
    if meta.oci_config is not None:
        annotations.update(_apply_oci(rootfs, meta.oci_config, process, opts))
    else:
        annotations.update(_apply_singularity(rootfs, meta, process, opts))
    config["annotations"] = annotations
    config["mounts"] = _usable_mounts(rootfs, config["mounts"], opts.readonly)
    return config


# --- Singularity images --------------------------------------------------------------

def _apply_singularity(rootfs: str, meta: ImageMetadata, process: dict[str, Any],
                       opts: RunOptions) -> dict[str, str]:
    action = "exec" if opts.exec_args else "run"
    if opts.exec_args and not opts.args:
        raise SIFError("--exec needs a command to run")
    script = f"{_ACTIONS}/{action}"
    if _executable_in_root(rootfs, script):
        process["args"] = [script, *opts.args]
    elif opts.exec_args:
        process["args"] = ["/bin/sh", "-c", _SOURCE_ENV + 'exec "$@"', "exec", *opts.args]
    elif _executable_in_root(rootfs, "/.singularity.d/runscript"):
        process["args"] = ["/bin/sh", "-c", _SOURCE_ENV + 'exec /.singularity.d/runscript "$@"',
                           "run", *opts.args]
    else:
        process["args"] = ["/bin/sh", *opts.args]
    name = os.path.basename(meta.image_path)
    process["env"] = [DEFAULT_PATH, f"SINGULARITY_CONTAINER={meta.image_path}",
                      f"SINGULARITY_NAME={name}", f"APPTAINER_CONTAINER={meta.image_path}",
                      f"APPTAINER_NAME={name}"]
    if opts.terminal:
        process["env"].append("TERM=xterm")
    labels = dict(meta.labels)
    raw = read_in_root(rootfs, "/.singularity.d/labels.json")
    if raw is not None:
        labels.update(_string_map(raw))
    return labels


def _string_map(raw: bytes) -> dict[str, str]:
    try:
        doc = jsonio.loads(raw)
    except ValueError:
        return {}
    if not isinstance(doc, dict):
        return {}
    return {str(k): v for k, v in doc.items() if isinstance(v, str)}


# --- images built from OCI images ----------------------------------------------------

def _apply_oci(rootfs: str, image_config: dict[str, Any], process: dict[str, Any],
               opts: RunOptions) -> dict[str, str]:
    cfg = image_config.get("config") if isinstance(image_config.get("config"), dict) \
        else image_config
    entrypoint = _str_list(cfg.get("Entrypoint"), "Entrypoint")
    cmd = _str_list(cfg.get("Cmd"), "Cmd")
    if opts.args:
        cmd = list(opts.args)
    args = entrypoint + cmd
    if not args:
        raise SIFError("the image config has neither Entrypoint nor Cmd: give a command")
    process["args"] = args
    env = _str_list(cfg.get("Env"), "Env")
    if not any(e.startswith("PATH=") for e in env):
        env.insert(0, DEFAULT_PATH)
    if opts.terminal and not any(e.startswith("TERM=") for e in env):
        env.append("TERM=xterm")
    process["env"] = env
    workdir = cfg.get("WorkingDir") or "/"
    if not isinstance(workdir, str) or not workdir.startswith("/"):
        raise SIFError(f"image config: WorkingDir {workdir!r} is not an absolute path")
    process["cwd"] = workdir
    user = cfg.get("User") or ""
    if not isinstance(user, str):
        raise SIFError("image config: User is not a string")
    if user and not opts.rootless:
        process["user"] = resolve_user(rootfs, user)
    labels = cfg.get("Labels") or {}
    return {str(k): v for k, v in labels.items() if isinstance(v, str)} \
        if isinstance(labels, dict) else {}


def _str_list(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SIFError(f"image config: {what} is not a list of strings")
    return list(value)


def resolve_user(rootfs: str, user: str) -> dict[str, Any]:
    """OCI `User` ("name", "uid", "name:group", "uid:gid") as uid/gid, names looked up
    in the image's /etc/passwd and /etc/group, as engines do."""
    name, _, group = user.partition(":")
    passwd = _table(rootfs, "/etc/passwd")
    uid, gid = _lookup_user(name, passwd, user)
    if group:
        gid = _lookup_group(group, _table(rootfs, "/etc/group"), user)
    return {"uid": uid, "gid": gid}


def _table(rootfs: str, path: str) -> list[list[str]]:
    raw = read_in_root(rootfs, path) or b""
    return [ln.split(":") for ln in raw.decode(errors="replace").splitlines()
            if ln and not ln.startswith("#")]


def _is_id(text: str) -> bool:
    """A uid or gid written as a number: ASCII digits, at most 32 bits."""
    return text.isascii() and text.isdigit() and len(text) <= 10 and int(text) < 1 << 32


def _lookup_user(name: str, passwd: list[list[str]], user: str) -> tuple[int, int]:
    for entry in passwd:
        if len(entry) >= 4 and (entry[0] == name or entry[2] == name):
            try:
                return int(entry[2]), int(entry[3])
            except ValueError:
                break
    if _is_id(name):
        return int(name), 0
    raise SIFError(f"image config: User {user!r}: no such user in the image's /etc/passwd")


def _lookup_group(group: str, groups: list[list[str]], user: str) -> int:
    for entry in groups:
        if len(entry) >= 3 and entry[0] == group:
            try:
                return int(entry[2])
            except ValueError:
                break
    if _is_id(group):
        return int(group)
    raise SIFError(f"image config: User {user!r}: no such group in the image's /etc/group")


# --- mounts that fit a read-only root ------------------------------------------------

def _usable_mounts(rootfs: str, mounts: list[dict[str, Any]],
                   readonly: bool) -> list[dict[str, Any]]:
    """The template's mounts, minus those whose destination a read-only image lacks
    (the runtime could not create it), plus a tmpfs on /tmp and /var/tmp as Singularity
    gives every container."""
    if not readonly:
        return mounts
    kept: list[dict[str, Any]] = []
    for m in mounts:
        dest = m["destination"]
        # Below a kept mount the runtime creates (tmpfs) or finds (sysfs) the directory.
        covered = any(dest.startswith(k["destination"].rstrip("/") + "/") for k in kept)
        if covered or exists_in_root(rootfs, dest):
            kept.append(m)
    for dest in ("/tmp", "/var/tmp"):
        if exists_in_root(rootfs, dest):
            kept.append({"destination": dest, "type": "tmpfs", "source": "tmpfs",
                         "options": ["nosuid", "nodev", "mode=1777"]})
    return kept
