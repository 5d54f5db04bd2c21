"""Building SIF images: from a root file system directory, or from an OCI image layout.

The root file system is squashed with mksquashfs (squashfs-tools) and stored as the
primary system partition, after the optional definition file, labels, environment
and OCI image config objects, in the order Singularity's builder uses. When the tree has
no `/.singularity.d`, one is added (action scripts, environment, runscript, labels) so
Singularity and Apptainer run the image as they run their own builds; with a
directory source it is added through mksquashfs pseudo files, leaving the directory
untouched.

An OCI image (`skopeo copy docker-archive:x.tar oci:DIR`, umoci) is unpacked layer by
layer into a scratch directory next to the output, its config kept as the JSON object
`oci-config.json` (what `ocirt sif bundle` runs from); this is how any Docker image
becomes a SIF file offline.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any

from ocirt import jsonio
from ocirt.sif import format as fmt
from ocirt.sif.format import DataType, FSType, PartType
from ocirt.sif.image import ObjectInput, SIFError, create

_GO_ARCH = {"amd64", "arm64", "arm", "386", "ppc64le", "ppc64", "s390x", "riscv64",
            "mips64le", "mips64", "mipsle", "mips", "loong64"}


@dataclass
class BuildSpec:
    deffile: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    env_script: str | None = None
    runscript: str | None = None
    arch: str | None = None
    compression: str = "gzip"
    launch_script: bool = True
    progress: bool = False


# --- the /.singularity.d tree --------------------------------------------------------

def _action(body: str) -> str:
    return ("#!/bin/sh\nfor script in /.singularity.d/env/*.sh; do\n"
            '    if [ -f "$script" ]; then . "$script"; fi\ndone\n' + body)


ACTIONS = {
    "exec": _action('exec "$@"\n'),
    "run": _action('if test -x /.singularity.d/runscript; then exec /.singularity.d/'
                   'runscript "$@"; fi\necho "No runscript found, executing /bin/sh"\n'
                   'exec /bin/sh "$@"\n'),
    "shell": _action('if test -n "$SINGULARITY_SHELL" -a -x "$SINGULARITY_SHELL"; then '
                     'exec "$SINGULARITY_SHELL" "$@"; fi\nexec /bin/sh "$@"\n'),
    "start": _action('if test -x /.singularity.d/startscript; then exec /.singularity.d/'
                     'startscript "$@"; fi\n'),
    "test": _action('if test -x /.singularity.d/test; then exec /.singularity.d/test "$@"; '
                    'fi\necho "No test found in container"\n'),
}


def _exports(env: dict[str, str]) -> str:
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items())


def singularity_tree(spec: BuildSpec, oci: dict[str, Any] | None) -> dict[str, tuple[int, str]]:
    """The files of /.singularity.d (path -> (mode, content)); directories implied."""
    files: dict[str, tuple[int, str]] = {
        f"actions/{name}": (0o755, text) for name, text in ACTIONS.items()}
    files["env/01-base.sh"] = (0o755, "#!/bin/sh\n")
    if oci is not None:
        env = dict(e.split("=", 1) for e in oci.get("Env") or [] if "=" in e)
        files["env/10-docker2singularity.sh"] = (0o755, "#!/bin/sh\n" + _exports(env))
    environment = (spec.env_script or "") + _exports(spec.env)
    files["env/90-environment.sh"] = (0o755, "#!/bin/sh\n" + environment)
    files["env/99-base.sh"] = (0o755, '#!/bin/sh\nif [ -z "$LD_LIBRARY_PATH" ]; then '
                               "LD_LIBRARY_PATH=/.singularity.d/libs; else LD_LIBRARY_PATH="
                               '"$LD_LIBRARY_PATH:/.singularity.d/libs"; fi\n'
                               'PS1="Singularity> "\nexport LD_LIBRARY_PATH PS1\n')
    runscript = _runscript(spec, oci)
    if runscript is not None:
        files["runscript"] = (0o755, runscript)
    files["labels.json"] = (0o644, _labels_json(spec.labels))
    if spec.deffile is not None:
        files["Singularity"] = (0o644, spec.deffile)
    return files


def _runscript(spec: BuildSpec, oci: dict[str, Any] | None) -> str | None:
    if spec.runscript is not None:
        body = spec.runscript if spec.runscript.startswith("#!") else \
            "#!/bin/sh\n\n" + spec.runscript
        return body if body.endswith("\n") else body + "\n"
    if oci is None:
        return None
    entry = [shlex.quote(a) for a in oci.get("Entrypoint") or []]
    cmd = [shlex.quote(a) for a in oci.get("Cmd") or []]
    lines = ["#!/bin/sh", "# from the OCI image config: Entrypoint, then Cmd unless "
             "arguments are given"]
    if entry:
        lines.append(f'if [ $# -gt 0 ]; then exec {" ".join(entry)} "$@"; fi')
    else:
        lines.append('if [ $# -gt 0 ]; then exec "$@"; fi')
    lines.append(f"exec {' '.join(entry + cmd)}" if entry or cmd else "exec /bin/sh")
    return "\n".join(lines) + "\n"


def _labels_json(labels: dict[str, str]) -> str:
    return jsonio.dumps_pretty(dict(sorted(labels.items())), "\t") + "\n"


# What a container needs to find in a read-only root (mount points, and files the
# runtime or engines bind over), created when the image lacks them, as Singularity's
# builder does.
BASE_DIRS = {"dev": 0o755, "proc": 0o555, "sys": 0o555, "tmp": 0o1777, "var": 0o755,
             "var/tmp": 0o1777, "home": 0o755, "root": 0o700, "etc": 0o755}
BASE_FILES = ("etc/hosts", "etc/resolv.conf")

_TOP_LINKS = {"singularity": ".singularity.d/runscript",
              "environment": ".singularity.d/env/90-environment.sh",
              ".run": ".singularity.d/actions/run", ".exec": ".singularity.d/actions/exec",
              ".shell": ".singularity.d/actions/shell", ".test": ".singularity.d/actions/test"}


def add_base_layout(root: str) -> None:
    """Create the missing mount points and files of BASE_DIRS/BASE_FILES in a scratch
    root we own (the OCI build)."""
    for rel, mode in BASE_DIRS.items():
        path = os.path.join(root, rel)
        if _real_dir(root, os.path.dirname(rel), set()) and not os.path.lexists(path):
            os.mkdir(path)
            os.chmod(path, mode)
    for rel in BASE_FILES:
        path = os.path.join(root, rel)
        if _real_dir(root, os.path.dirname(rel), set()) and not os.path.lexists(path):
            # O_EXCL|O_NOFOLLOW: a symlink planted by a layer is never followed.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                             0o644))


def write_tree(root: str, files: dict[str, tuple[int, str]]) -> None:
    """Write /.singularity.d into a scratch root we own (the OCI build)."""
    base = os.path.join(root, ".singularity.d")
    for sub in ("", "actions", "env", "libs"):
        os.makedirs(os.path.join(base, sub), mode=0o755, exist_ok=True)
    for rel, (mode, text) in files.items():
        path = os.path.join(base, rel)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(path, mode)
    for name, target in _TOP_LINKS.items():
        link = os.path.join(root, name)
        if not os.path.lexists(link) and (name != "singularity" or "runscript" in files):
            os.symlink(target, link)


def pseudo_definitions(rootfs: str, files: dict[str, tuple[int, str]],
                       scratch: str) -> str:
    """A mksquashfs pseudo-file list adding /.singularity.d from files in `scratch`, and
    the base mount points and files the directory lacks."""
    lines = []
    added: set[str] = set()
    for rel, mode in BASE_DIRS.items():
        parent = os.path.dirname(rel)
        if not os.path.lexists(os.path.join(rootfs, rel)) and _real_dir(rootfs, parent, added):
            lines.append(f"/{rel} d {mode:o} 0 0")
            added.add(rel)
    for rel in BASE_FILES:
        parent = os.path.dirname(rel)
        if not os.path.lexists(os.path.join(rootfs, rel)) and _real_dir(rootfs, parent, added):
            lines.append(f"/{rel} f 644 0 0 true")
    if files:
        lines += _singularity_pseudo(rootfs, files, scratch)
    path = os.path.join(scratch, "pseudo")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


def _real_dir(rootfs: str, rel: str, added: set[str]) -> bool:
    """Whether `rel` is (or will be, by the pseudo file) a directory, not a symlink."""
    if not rel or rel in added:
        return True
    path = os.path.join(rootfs, rel)
    return os.path.isdir(path) and not os.path.islink(path)


def _singularity_pseudo(rootfs: str, files: dict[str, tuple[int, str]],
                        scratch: str) -> list[str]:
    lines = []
    for sub in ("/.singularity.d", "/.singularity.d/actions", "/.singularity.d/env",
                "/.singularity.d/libs"):
        lines.append(f"{sub} d 755 0 0")
    for i, (rel, (mode, text)) in enumerate(sorted(files.items())):
        src = os.path.join(scratch, f"f{i}")
        with open(src, "w", encoding="utf-8") as f:
            f.write(text)
        lines.append(f"/.singularity.d/{rel} f {mode:o} 0 0 cat {shlex.quote(src)}")
    for name, target in _TOP_LINKS.items():
        if os.path.lexists(os.path.join(rootfs, name)):
            continue
        if name == "singularity" and "runscript" not in files:
            continue
        lines.append(f"/{name} s 777 0 0 {target}")
    return lines


# --- squashing and assembling ----------------------------------------------------------

def mksquashfs(source: str, output: str, spec: BuildSpec, pseudo: str | None = None) -> None:
    binary = shutil.which("mksquashfs")
    if binary is None:
        raise SIFError("building images needs mksquashfs (apt install squashfs-tools)")
    argv = [binary, source, output, "-noappend", "-no-recovery", "-comp", spec.compression]
    if os.geteuid() != 0:
        argv.append("-all-root")
    if pseudo:
        argv += ["-pf", pseudo]
    if not spec.progress:
        argv += ["-no-progress", "-quiet"]
    with tempfile.TemporaryFile() as err:
        res = subprocess.run(argv, stdin=subprocess.DEVNULL,
                             stdout=2 if spec.progress else subprocess.DEVNULL, stderr=err,
                             check=False)
        if res.returncode != 0:
            err.seek(0)
            lines = [ln for ln in err.read().decode(errors="replace").splitlines() if ln]
            raise SIFError(f"mksquashfs failed: {lines[-1] if lines else res.returncode}")


def assemble(output: str, squashfs: str, spec: BuildSpec,
             oci_config: dict[str, Any] | None = None) -> None:
    """Write the SIF: Def.FILE, JSON.Labels, Env.Vars, oci-config.json, then the
    squashfs primary partition."""
    arch = spec.arch or fmt.host_arch()
    if arch not in fmt.ARCH_CODES:
        raise SIFError(f"unknown architecture {arch!r}")
    objects = []
    if spec.deffile is not None:
        objects.append(ObjectInput(DataType.DEFFILE, data=spec.deffile.encode()))
    if spec.labels:
        objects.append(ObjectInput(DataType.LABELS, data=_labels_json(spec.labels).encode(),
                                   name="labels.json"))
    environment = (spec.env_script or "") + _exports(spec.env)
    if environment:
        objects.append(ObjectInput(DataType.ENVVAR, data=environment.encode(),
                                   name="90-environment.sh"))
    if oci_config is not None:
        objects.append(ObjectInput(DataType.GENERIC_JSON, data=jsonio.dumps(oci_config)
                                   .encode(), name="oci-config.json"))
    objects.append(ObjectInput(DataType.PARTITION, path=squashfs,
                               extra=fmt.partition_extra(FSType.SQUASHFS, PartType.PRIMSYS,
                                                         arch)))
    script = fmt.SINGULARITY_LAUNCH_SCRIPT if spec.launch_script else ""
    create(output, objects, launch_script=script)


def from_rootfs(rootfs: str, output: str, spec: BuildSpec) -> None:
    """Build `output` from the directory `rootfs` (left unchanged)."""
    if not os.path.isdir(rootfs):
        raise SIFError(f"{rootfs}: not a directory")
    has_tree = os.path.isdir(os.path.join(rootfs, ".singularity.d"))
    if has_tree and (spec.runscript or spec.env or spec.env_script):
        raise SIFError(f"{rootfs} has its own /.singularity.d: put the runscript and "
                       "environment there")
    with _scratch(output) as scratch:
        files = {} if has_tree else singularity_tree(spec, None)
        pseudo = pseudo_definitions(rootfs, files, scratch)
        squashfs = os.path.join(scratch, "rootfs.squashfs")
        mksquashfs(rootfs, squashfs, spec, pseudo)
        assemble(output, squashfs, spec)


def from_oci_layout(layout_dir: str, output: str, spec: BuildSpec,
                    ref: str | None = None) -> None:
    """Build `output` from an image in an OCI image layout directory."""
    from ocirt.sif.ocilayout import Layout, apply_layers

    layout = Layout(layout_dir)
    manifest = layout.manifest(ref, spec.arch or fmt.host_arch())
    config = layout.read_json_blob(manifest["config"])
    if not isinstance(config, dict):
        raise SIFError(f"{layout_dir}: image config is not a JSON object")
    run = config.get("config") if isinstance(config.get("config"), dict) else {}
    if spec.arch is None and config.get("architecture") in _GO_ARCH:
        spec.arch = config["architecture"]
    labels = {k: v for k, v in (run.get("Labels") or {}).items() if isinstance(v, str)}
    spec.labels = {**labels, **spec.labels}
    with _scratch(output) as scratch:
        tree = os.path.join(scratch, "rootfs")
        os.mkdir(tree, 0o755)
        apply_layers(layout, manifest, tree)
        add_base_layout(tree)
        if not os.path.lexists(os.path.join(tree, ".singularity.d")):
            write_tree(tree, singularity_tree(spec, run))
        squashfs = os.path.join(scratch, "rootfs.squashfs")
        mksquashfs(tree, squashfs, spec)
        assemble(output, squashfs, spec, config)


class _scratch:  # noqa: N801 - used as a context manager, like tempfile's
    """A scratch directory next to `output` (same file system: big images fit), removed
    afterwards whatever happens."""

    def __init__(self, output: str) -> None:
        parent = os.path.dirname(os.path.abspath(output))
        try:
            self.path = tempfile.mkdtemp(prefix=".ocirt-build-", dir=parent)
        except OSError as exc:
            raise SIFError(f"scratch directory in {parent}: {exc.strerror}") from None

    def __enter__(self) -> str:
        return self.path

    def __exit__(self, *exc: object) -> None:
        def writable(func: Any, path: str, _exc: Any) -> None:
            try:
                os.chmod(os.path.dirname(path), 0o700)
                func(path)
            except OSError:
                pass

        shutil.rmtree(self.path, onerror=writable)
