"""config.json -> Plan: validation and conversion in one pure step.

Everything after this step works from the Plan, never from the raw JSON, and this step
touches no kernel state (it may read files: the bundle path, namespace paths' existence),
so unit tests can assert on plans without root. Every error names the offending field
(`process.capabilities.bounding[3]: unknown capability "CAP_TEST"`).
"""

from __future__ import annotations

import os

from ocirt import jsonio
from ocirt.errors import ConfigError
from ocirt.linux import consts as c
from ocirt.spec import options as opt

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from typing import Any


class Mount:
    """One entry of `mounts`, with its options decoded."""

    __slots__ = ("source", "destination", "fstype", "flags", "data", "propagation",
                 "rec_set", "rec_clr", "tmpcopyup", "options", "uid_map", "gid_map",
                 "idmap_recursive")

    def __init__(self, source: str, destination: str, fstype: str, flags: int, data: str,
                 propagation: list[int], rec_set: int, rec_clr: int, tmpcopyup: bool,
                 options: list[str]) -> None:
        self.source = source
        self.destination = destination
        self.fstype = fstype
        self.flags = flags
        self.data = data
        self.propagation = propagation
        self.rec_set = rec_set
        self.rec_clr = rec_clr
        self.tmpcopyup = tmpcopyup
        self.options = options
        # An idmapped bind mount (`idmap`/`ridmap`, or uidMappings/gidMappings): the
        # (containerID, hostID, size) maps its user namespace gets; None for plain mounts.
        self.uid_map: list[tuple[int, int, int]] | None = None
        self.gid_map: list[tuple[int, int, int]] | None = None
        self.idmap_recursive = False

    @property
    def idmapped(self) -> bool:
        return self.uid_map is not None

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & c.MS_BIND)

    def __repr__(self) -> str:
        return f"Mount({self.source!r} -> {self.destination!r}, {self.fstype}, {self.flags:#x})"


class Device:
    """A device node to create in the container's /dev."""

    __slots__ = ("path", "type", "major", "minor", "mode", "uid", "gid")

    def __init__(self, path: str, type: str, major: int, minor: int, mode: int, uid: int,
                 gid: int) -> None:
        self.path = path
        self.type = type
        self.major = major
        self.minor = minor
        self.mode = mode
        self.uid = uid
        self.gid = gid

    def __repr__(self) -> str:
        return f"Device({self.path} {self.type} {self.major}:{self.minor})"


class Process:
    """The process to run: shared by the container's init and by `exec`."""

    __slots__ = ("args", "env", "cwd", "uid", "gid", "additional_gids", "umask", "caps",
                 "no_new_privs", "rlimits", "oom_score_adj", "terminal", "console_size",
                 "apparmor", "selinux_label", "io_priority", "scheduler", "cpu_affinity",
                 "warnings")

    def __init__(self) -> None:
        self.args: list[str] = []
        self.env: list[str] = []
        self.cwd = "/"
        self.uid = 0
        self.gid = 0
        self.additional_gids: list[int] = []
        self.umask: int | None = None
        # capability set name -> bit mask; None = the set is not given (left unchanged)
        self.caps: dict[str, int] | None = None
        self.no_new_privs = False
        self.rlimits: list[tuple[int, int, int]] = []
        self.oom_score_adj: int | None = None
        self.terminal = False
        self.console_size: tuple[int, int] | None = None  # (rows, columns)
        self.apparmor = ""
        self.selinux_label = ""
        self.io_priority: tuple[int, int] | None = None  # (class, level)
        self.scheduler: dict[str, int] | None = None
        self.cpu_affinity: tuple[str, str] | None = None  # (initial, final)
        self.warnings: list[str] = []  # what the runtime logs before it starts the process

    def env_value(self, name: str) -> str | None:
        prefix = name + "="
        for item in reversed(self.env):
            if item.startswith(prefix):
                return item[len(prefix):]
        return None


class IntelRdt:
    """linux.intelRdt: the resctrl group the container joins and what is written to it."""

    __slots__ = ("clos_id", "schemata", "l3_cache", "mem_bw", "monitoring")

    def __init__(self) -> None:
        self.clos_id = ""  # "" = a group named after the container, "/" = the root group
        self.schemata: list[str] = []  # lines in write order: L3, MB, then `schemata`
        self.l3_cache = False  # l3CacheSchema is set (needs CAT)
        self.mem_bw = False  # memBwSchema is set (needs MBA)
        self.monitoring = False  # enableMonitoring: a MON group of its own

    def __repr__(self) -> str:
        return f"IntelRdt({self.clos_id!r}, {self.schemata!r}, mon={self.monitoring})"


class Plan:
    """Everything `create` needs, decoded and checked."""

    def __init__(self) -> None:
        self.oci_version = ""
        self.bundle = ""
        self.rootfs = ""
        self.readonly = False
        self.hostname: str | None = None
        self.domainname: str | None = None
        # namespace type -> "" (create a new one) or a path to join
        self.namespaces: dict[str, str] = {}
        self.uid_mappings: list[tuple[int, int, int]] = []  # (container, host, size)
        self.gid_mappings: list[tuple[int, int, int]] = []
        self.time_offsets: dict[str, tuple[int, int]] = {}
        self.mounts: list[Mount] = []
        self.devices: list[Device] = []
        self.setup_dev = True  # create default devices and /dev symlinks
        self.masked_paths: list[str] = []
        self.readonly_paths: list[str] = []
        self.rootfs_propagation = 0
        self.mount_label = ""
        self.sysctl: dict[str, str] = {}
        self.process = Process()
        self.has_process = True  # False: config.json has no process; `start` must fail
        self.sif_root = False  # root.path is a SIF image file (mounted by `create`)
        self.hooks: dict[str, list[dict[str, Any]]] = {}
        self.personality: int | None = None
        self.cgroups_path = ""
        self.resources: dict[str, Any] | None = None
        self.seccomp: dict[str, Any] | None = None
        self.annotations: dict[str, str] = {}
        self.no_pivot = False
        self.no_new_keyring = False
        self.net_devices: dict[str, dict[str, Any]] = {}
        # linux.memoryPolicy: (mode | mode flags, sorted node numbers) for set_mempolicy
        self.memory_policy: tuple[int, list[int]] | None = None
        self.intel_rdt: IntelRdt | None = None

    def creates(self, ns: str) -> bool:
        return self.namespaces.get(ns) == ""

    def has(self, ns: str) -> bool:
        return ns in self.namespaces


# The kernel's limits: setgroups(2) takes at most NGROUPS_MAX groups; mknod(2) takes a
# 32-bit dev_t that holds a 12-bit major and a 20-bit minor (a larger number would be
# cut to another device).
NGROUPS_MAX = 65536
MAX_MAJOR = (1 << 12) - 1
MAX_MINOR = (1 << 20) - 1
INT32_MAX = (1 << 31) - 1
MAX_CPUS = 8192  # the largest CONFIG_NR_CPUS
MAX_NUMNODES = 1024  # the largest 1 << CONFIG_NODES_SHIFT


# --- small typed getters ---------------------------------------------------------------

def _type_name(kind: Any) -> str:
    names = {str: "a string", int: "an integer", bool: "a boolean", list: "an array",
             dict: "an object"}
    if isinstance(kind, tuple):
        return " or ".join(names.get(k, k.__name__) for k in kind)
    return names.get(kind, kind.__name__)


def _check(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok = isinstance(value, kinds)
    if ok and isinstance(value, bool) and bool not in kinds:
        ok = False  # JSON true is not an integer
    if not ok:
        raise ConfigError(f"{where}: must be {_type_name(kind)}")
    return value


def _get(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str,
         default: Any = None) -> Any:
    value = obj.get(key)
    if value is None:
        return default
    return _check(value, kind, f"{where}.{key}" if where else key)


def _uint(value: Any, where: str, bits: int = 32) -> int:
    _check(value, int, where)
    if value < 0 or value >= 1 << bits:
        raise ConfigError(f"{where}: {value} is out of range")
    return int(value)


def _int_range(value: Any, where: str, lo: int, hi: int) -> int:
    _check(value, int, where)
    if not lo <= value <= hi:
        raise ConfigError(f"{where}: {value} is outside [{lo}, {hi}]")
    return int(value)


def _digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() also takes "²", which int() refuses."""
    return text.isascii() and text.isdigit()


def check_strings(doc: Any, where: str) -> None:
    """Before any field is used: no NUL byte or lone surrogate in any string (the kernel
    would cut a path or argument at the NUL; a surrogate has no UTF-8 form), and no
    nesting deeper than any runtime-spec document has. Annotations may hold NUL bytes, as
    with runc: they are only stored and shown, and CRI-O copies them from Kubernetes
    objects, where NUL is allowed."""
    try:
        if not where and isinstance(doc, dict) and "annotations" in doc:
            jsonio.check_tree({k: v for k, v in doc.items() if k != "annotations"})
            jsonio.check_tree({"annotations": doc["annotations"]}, allow_nul=True)
        else:
            jsonio.check_tree(doc)
    except jsonio.JSONContentError as exc:
        path = jsonio.path_text([where, *exc.path] if where else exc.path)
        raise ConfigError(f"{path or 'config.json'}: {exc.problem}") from None


def _str_list(obj: dict[str, Any], key: str, where: str) -> list[str]:
    items = _get(obj, key, list, where, [])
    for i, item in enumerate(items):
        _check(item, str, f"{where}.{key}[{i}]")
    return list(items)


# --- the conversion --------------------------------------------------------------------

def build_plan(spec: dict[str, Any], bundle: str, *, no_pivot: bool = False,
               no_new_keyring: bool = False) -> Plan:
    """Validate `spec` (a parsed config.json) and convert it into a Plan."""
    if not isinstance(spec, dict):
        raise ConfigError("config.json: the top level must be a JSON object")
    check_strings(spec, "")
    p = Plan()
    p.bundle = bundle
    p.no_pivot = no_pivot
    p.no_new_keyring = no_new_keyring
    p.oci_version = _get(spec, "ociVersion", str, "", "")
    if not p.oci_version:
        raise ConfigError("ociVersion: must be set")
    if not p.oci_version.startswith("1."):
        raise ConfigError(f"ociVersion: unsupported version {p.oci_version!r} (ocirt runs 1.x)")

    root = _get(spec, "root", dict, "")
    if root is None:
        raise ConfigError("root: must be specified")
    root_path = _get(root, "path", str, "root", "")
    if not root_path:
        raise ConfigError("root.path: must be set")
    p.rootfs = os.path.normpath(os.path.join(bundle, root_path))
    p.readonly = bool(_get(root, "readonly", bool, "root", False))

    p.annotations = _annotations(spec)
    linux = _get(spec, "linux", dict, "", {})
    _namespaces(p, linux)
    p.hostname = _get(spec, "hostname", str, "")
    p.domainname = _get(spec, "domainname", str, "")
    for key, value in (("hostname", p.hostname), ("domainname", p.domainname)):
        if value and not p.has("uts"):
            raise ConfigError(f"{key}: unable to set {key} without a private UTS namespace")

    process = _get(spec, "process", dict, "")
    if process is not None:
        p.process = build_process(process, "process")
    else:  # OPTIONAL for create, REQUIRED for start (runtime-spec config.md)
        p.has_process = False
    _mounts(p, spec)
    _devices(p, linux)
    p.masked_paths = _abs_paths(linux, "maskedPaths")
    p.readonly_paths = _abs_paths(linux, "readonlyPaths")
    if (p.masked_paths or p.readonly_paths) and not p.has("mount"):
        raise ConfigError("linux.maskedPaths/readonlyPaths: unable to restrict sys entries "
                          "without a private MNT namespace")
    _rootfs_propagation(p, linux)
    p.mount_label = _get(linux, "mountLabel", str, "linux", "")
    _sysctl(p, linux)
    _id_mappings(p, linux)
    _idmapped_mounts(p)
    _time_offsets(p, linux)
    p.hooks = _hooks(spec)
    _personality(p, linux)
    p.cgroups_path = _get(linux, "cgroupsPath", str, "linux", "")
    p.resources = _get(linux, "resources", dict, "linux")
    p.seccomp = _get(linux, "seccomp", dict, "linux")
    p.net_devices = _get(linux, "netDevices", dict, "linux", {})
    if p.net_devices and not p.has("network"):
        raise ConfigError("linux.netDevices: unable to move network devices without a NET "
                          "namespace")
    p.memory_policy = _memory_policy(linux)
    p.intel_rdt = _intel_rdt(linux)
    return p


def _annotations(spec: dict[str, Any]) -> dict[str, str]:
    annotations = _get(spec, "annotations", dict, "", {})
    for key, value in annotations.items():
        _check(value, str, f"annotations[{key!r}]")
    return dict(annotations)


def _namespaces(p: Plan, linux: dict[str, Any]) -> None:
    for i, ns in enumerate(_get(linux, "namespaces", list, "linux", [])):
        where = f"linux.namespaces[{i}]"
        _check(ns, dict, where)
        kind = _get(ns, "type", str, where, "")
        if kind not in c.NAMESPACES:
            raise ConfigError(f"{where}.type: namespace {kind!r} does not exist")
        if kind in p.namespaces:
            raise ConfigError(f"{where}: malformed spec file: duplicated ns {kind!r}")
        path = _get(ns, "path", str, where, "")
        if path:
            if not os.path.isabs(path):
                raise ConfigError(f"{where}.path: {path!r} must be an absolute path")
            if not os.path.exists(path):
                raise ConfigError(f"{where}.path: {path}: no such file or directory")
        p.namespaces[kind] = path


def build_process(proc: dict[str, Any], where: str) -> Process:
    """Decode a runtime-spec process object (config.json's, or exec's process.json)."""
    _check(proc, dict, where)
    check_strings(proc, where)
    pr = Process()
    pr.terminal = bool(_get(proc, "terminal", bool, where, False))
    size = _get(proc, "consoleSize", dict, where)
    if size is not None:
        pr.console_size = (_uint(size.get("height", 0), f"{where}.consoleSize.height"),
                           _uint(size.get("width", 0), f"{where}.consoleSize.width"))
    pr.args = _str_list(proc, "args", where)
    if _get(proc, "commandLine", str, where):
        raise ConfigError(f"{where}.commandLine: only supported on Windows")
    if not pr.args:
        raise ConfigError(f"{where}.args: args must not be empty")
    pr.env = _str_list(proc, "env", where)
    for i, item in enumerate(pr.env):
        name, eq, _ = item.partition("=")
        if not eq:
            raise ConfigError(f"{where}.env[{i}]: invalid environment variable {item!r}: "
                              "missing '='")
        if not name:
            raise ConfigError(f"{where}.env[{i}]: invalid environment variable: name cannot "
                              "be empty")
        if "\0" in item:
            raise ConfigError(f"{where}.env[{i}]: contains a nul byte")
    pr.cwd = _get(proc, "cwd", str, where, "")
    if not pr.cwd:
        raise ConfigError(f"{where}.cwd: Cwd property must not be empty")
    if not pr.cwd.startswith("/"):
        raise ConfigError(f"{where}.cwd: Cwd must be an absolute path")
    user = _get(proc, "user", dict, where, {})
    pr.uid = _uint(user.get("uid", 0), f"{where}.user.uid")
    pr.gid = _uint(user.get("gid", 0), f"{where}.user.gid")
    gids = _get(user, "additionalGids", list, f"{where}.user", [])
    if len(gids) > NGROUPS_MAX:
        raise ConfigError(f"{where}.user.additionalGids: {len(gids)} groups, more than the "
                          f"kernel's limit of {NGROUPS_MAX}")
    pr.additional_gids = [_uint(g, f"{where}.user.additionalGids[{i}]")
                          for i, g in enumerate(gids)]
    if user.get("umask") is not None:
        pr.umask = _uint(user["umask"], f"{where}.user.umask")
        if pr.umask > 0o777:
            raise ConfigError(f"{where}.user.umask: {pr.umask:#o} is not a valid umask")
    pr.caps = build_caps(_get(proc, "capabilities", dict, where), f"{where}.capabilities",
                         pr.warnings)
    pr.no_new_privs = bool(_get(proc, "noNewPrivileges", bool, where, False))
    pr.rlimits = _rlimits(proc, where)
    if proc.get("oomScoreAdj") is not None:
        adj = _check(proc["oomScoreAdj"], int, f"{where}.oomScoreAdj")
        if not -1000 <= adj <= 1000:
            raise ConfigError(f"{where}.oomScoreAdj: {adj} is outside [-1000, 1000]")
        pr.oom_score_adj = adj
    pr.apparmor = _get(proc, "apparmorProfile", str, where, "")
    pr.selinux_label = _get(proc, "selinuxLabel", str, where, "")
    prio = _get(proc, "ioPriority", dict, where)
    if prio is not None:
        cls = _get(prio, "class", str, f"{where}.ioPriority", "")
        if cls not in opt.IOPRIO_CLASSES:
            raise ConfigError(f"{where}.ioPriority.class: invalid io priority class {cls!r}")
        level = _check(prio.get("priority", 0), int, f"{where}.ioPriority.priority")
        if not 0 <= level <= 7:
            raise ConfigError(f"{where}.ioPriority.priority: {level} is outside [0, 7]")
        pr.io_priority = (opt.IOPRIO_CLASSES[cls], level)
    pr.scheduler = _scheduler(_get(proc, "scheduler", dict, where), f"{where}.scheduler")
    aff = _get(proc, "execCPUAffinity", dict, where)
    if aff is not None:
        pr.cpu_affinity = (_get(aff, "initial", str, f"{where}.execCPUAffinity", ""),
                           _get(aff, "final", str, f"{where}.execCPUAffinity", ""))
        for name, value in zip(("initial", "final"), pr.cpu_affinity, strict=True):
            if value:
                parse_cpu_list(value, f"{where}.execCPUAffinity.{name}")
    return pr


def build_caps(caps: dict[str, Any] | None, where: str,
               warnings: list[str] | None = None) -> dict[str, int] | None:
    """Capability names -> a bit mask per set. An unknown name is left out with a warning
    in `warnings` (runtime-spec 1.1+: "MUST be logged as a warning", runc does the same);
    without a `warnings` list it is an error (a typo in `exec --cap`)."""
    if caps is None:
        return None
    out: dict[str, int] = {}
    for name in opt.CAP_SETS:
        mask = 0
        for i, cap in enumerate(_get(caps, name, list, where, [])):
            _check(cap, str, f"{where}.{name}[{i}]")
            num = opt.CAPABILITIES.get(cap.upper() if cap.upper().startswith("CAP_")
                                       else "CAP_" + cap.upper())
            if num is None:
                message = f"{where}.{name}[{i}]: unknown capability {cap!r}"
                if warnings is None:
                    raise ConfigError(message)
                warnings.append(message + " ignored")
                continue
            mask |= 1 << num
        out[name] = mask
    return out


def _rlimits(proc: dict[str, Any], where: str) -> list[tuple[int, int, int]]:
    seen = set()
    out = []
    for i, rl in enumerate(_get(proc, "rlimits", list, where, [])):
        w = f"{where}.rlimits[{i}]"
        _check(rl, dict, w)
        kind = _get(rl, "type", str, w, "")
        if kind not in opt.RLIMITS:
            raise ConfigError(f"{w}.type: rlimit type {kind!r} is not supported")
        if kind in seen:
            raise ConfigError(f"{w}.type: duplicate rlimit type {kind!r}")
        seen.add(kind)
        soft = _uint(rl.get("soft", 0), f"{w}.soft", 64)
        hard = _uint(rl.get("hard", 0), f"{w}.hard", 64)
        out.append((opt.RLIMITS[kind], soft, hard))
    return out


def _scheduler(sched: dict[str, Any] | None, where: str) -> dict[str, int] | None:
    if sched is None:
        return None
    policy = _get(sched, "policy", str, where, "")
    if policy not in opt.SCHED_POLICIES:
        raise ConfigError(f"{where}.policy: invalid scheduler policy {policy!r}")
    flags = 0
    for i, flag in enumerate(_str_list(sched, "flags", where)):
        if flag not in opt.SCHED_FLAGS:
            raise ConfigError(f"{where}.flags[{i}]: invalid scheduler flag {flag!r}")
        flags |= opt.SCHED_FLAGS[flag]
    nice = _check(sched.get("nice", 0), int, f"{where}.nice")
    if not -20 <= nice <= 19:
        raise ConfigError(f"{where}.nice: {nice} is outside [-20, 19]")
    out = {"policy": opt.SCHED_POLICIES[policy], "flags": flags, "nice": nice}
    for key in ("priority", "runtime", "deadline", "period"):
        out[key] = _uint(sched.get(key, 0), f"{where}.{key}", 64)
    if policy in ("SCHED_FIFO", "SCHED_RR") and not 1 <= out["priority"] <= 99:
        raise ConfigError(f"{where}.priority: must be in [1, 99] for {policy}")
    return out


def parse_cpu_list(text: str, where: str) -> set[int]:
    """`0-3,7` -> {0, 1, 2, 3, 7}."""
    return _id_list(text, where, "CPU", MAX_CPUS)


def _id_list(text: str, where: str, what: str, limit: int) -> set[int]:
    """A kernel list of CPUs or NUMA nodes (`0-3,7`), each below `limit`."""
    ids: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        lo, dash, hi = part.partition("-")
        if not _digits(lo) or (dash and not _digits(hi)):
            raise ConfigError(f"{where}: invalid {what} list {text!r}")
        first, last = int(lo), int(hi) if dash else int(lo)
        if last < first:
            raise ConfigError(f"{where}: invalid {what} range {part!r}")
        if last >= limit:
            raise ConfigError(f"{where}: {what} {last} is beyond the kernel's limit of "
                              f"{limit} {what}s")
        ids.update(range(first, last + 1))
    return ids


def parse_mount_options(options: list[str]) -> tuple[int, str, list[int], int, int, bool]:
    """(flags, data, propagation, rec_set, rec_clr, tmpcopyup) from a mount's options."""
    flags = 0
    data: list[str] = []
    propagation: list[int] = []
    rec_set = rec_clr = 0
    tmpcopyup = False
    for o in options:
        if o in opt.MOUNT_FLAGS and opt.MOUNT_FLAGS[o][1]:
            clear, flag = opt.MOUNT_FLAGS[o]
            flags = flags & ~flag if clear else flags | flag
        elif o in opt.PROPAGATION:
            propagation.append(opt.PROPAGATION[o])
        elif o in opt.RECURSIVE_ATTRS:
            clear, attr = opt.RECURSIVE_ATTRS[o]
            if clear:
                rec_clr |= attr
            else:
                rec_set |= attr
                if attr & c.MOUNT_ATTR__ATIME == attr:
                    rec_clr |= c.MOUNT_ATTR__ATIME
        elif o == "tmpcopyup":
            tmpcopyup = True
        elif o == "defaults":
            continue
        else:
            data.append(o)
    return flags, ",".join(data), propagation, rec_set, rec_clr, tmpcopyup


def _mounts(p: Plan, spec: dict[str, Any]) -> None:
    for i, m in enumerate(_get(spec, "mounts", list, "", [])):
        where = f"mounts[{i}]"
        _check(m, dict, where)
        dest = _get(m, "destination", str, where, "")
        if not dest:
            raise ConfigError(f"{where}.destination: must be set")
        if not dest.startswith("/"):
            dest = "/" + dest  # runc accepts relative destinations (with a warning)
        dest = os.path.normpath(dest)
        if dest.startswith("//"):
            dest = "/" + dest.lstrip("/")
        options = _str_list(m, "options", where)
        idmap_opts = [o for o in options if _is_idmap_option(o)]
        flags, data, propagation, rec_set, rec_clr, tmpcopyup = parse_mount_options(
            [o for o in options if not _is_idmap_option(o)] if idmap_opts else options)
        source = _get(m, "source", str, where, "")
        fstype = _get(m, "type", str, where, "")
        if flags & c.MS_BIND:
            fstype = "bind"  # the type is meaningless for bind mounts
            if source and not source.startswith("/"):
                source = os.path.join(p.bundle, source)
        elif fstype == "bind":
            flags |= c.MS_BIND  # type "bind" alone means a bind mount (crun, runc 1.2)
            if source and not source.startswith("/"):
                source = os.path.join(p.bundle, source)
        if not fstype:
            raise ConfigError(f"{where}.type: must be set for a mount that is not a bind mount")
        for name, value in (("source", source), ("destination", dest), ("type", fstype)):
            if "\0" in value:
                raise ConfigError(f"{where}.{name}: contains a nul byte")
        if fstype == "bind" and not source:
            raise ConfigError(f"{where}.source: a bind mount needs a source")
        if dest == "/dev" and fstype == "bind":
            p.setup_dev = False
        mount = Mount(source, dest, fstype, flags, data, propagation, rec_set, rec_clr,
                      tmpcopyup, options)
        _mount_idmap(mount, m, idmap_opts, where)
        p.mounts.append(mount)


def _is_idmap_option(o: str) -> bool:
    return o in ("idmap", "ridmap") or o.startswith(("idmap=", "ridmap="))


def _mount_idmap(mount: Mount, m: dict[str, Any], idmap_opts: list[str], where: str) -> None:
    """A mount's own uidMappings/gidMappings and its idmap/ridmap option. Mappings without
    an option mean `idmap` (the spec asks for the option only so that older runtimes do
    not ignore the mappings silently). `_idmapped_mounts` fills in the container's
    mappings for an option without mappings, once those are parsed."""
    maps = {}
    for key in ("uidMappings", "gidMappings"):
        given = _get(m, key, list, where, [])
        maps[key] = [_id_mapping(e, f"{where}.{key}[{i}]") for i, e in enumerate(given)]
    for o in idmap_opts:
        if "=" in o:
            if maps["uidMappings"] or maps["gidMappings"]:
                raise ConfigError(f"{where}.options: {o!r} and uidMappings/gidMappings "
                                  f"both give the mapping")
            maps["uidMappings"], maps["gidMappings"] = _crun_idmap(o, f"{where}.options")
    if not (idmap_opts or maps["uidMappings"] or maps["gidMappings"]):
        return
    if not mount.is_bind:
        raise ConfigError(f"{where}: idmapped mounts are only supported for bind mounts, "
                          f"not type {mount.fstype!r}")
    if bool(maps["uidMappings"]) != bool(maps["gidMappings"]):
        raise ConfigError(f"{where}: uidMappings and gidMappings must be given together")
    if maps["uidMappings"]:
        mount.uid_map, mount.gid_map = maps["uidMappings"], maps["gidMappings"]
    else:
        mount.uid_map, mount.gid_map = [], []  # the container's, filled in later
    mount.idmap_recursive = any(o.startswith("ridmap") for o in idmap_opts)


def _crun_idmap(option: str, where: str) -> tuple[list[tuple[int, int, int]],
                                                  list[tuple[int, int, int]]]:
    """crun's inline form, which podman passes through from `-v SRC:DST:idmap=...`:
    `idmap=uids=0-1000-10#10-2000-5;gids=0-1000-10`, each triplet the on-disk id, the
    host id and the length (the same order as containerID, hostID, size)."""
    maps: dict[str, list[tuple[int, int, int]]] = {"uids": [], "gids": []}
    value = option.split("=", 1)[1]
    for part in filter(None, value.split(";")):
        kind, eq, triplets = part.partition("=")
        if kind not in maps or not eq:
            raise ConfigError(f"{where}: {option!r}: expected uids=...;gids=...")
        for triplet in triplets.split("#"):
            fields = triplet.split("-")
            if len(fields) != 3 or not all(_digits(f) for f in fields):
                raise ConfigError(f"{where}: {option!r}: {triplet!r} is not "
                                  f"FSID-HOSTID-LENGTH")
            fs_id, host_id, size = (int(f) for f in fields)
            if size == 0:
                raise ConfigError(f"{where}: {option!r}: a mapping's length must be > 0")
            maps[kind].append((fs_id, host_id, size))
    if not maps["uids"] or not maps["gids"]:
        raise ConfigError(f"{where}: {option!r}: both uids= and gids= are needed")
    return maps["uids"], maps["gids"]


def _id_mapping(e: Any, where: str) -> tuple[int, int, int]:
    _check(e, dict, where)
    size = _uint(e.get("size", 0), f"{where}.size")
    if size == 0:
        raise ConfigError(f"{where}.size: must be greater than zero")
    return (_uint(e.get("containerID", 0), f"{where}.containerID"),
            _uint(e.get("hostID", 0), f"{where}.hostID"), size)


def _idmapped_mounts(p: Plan) -> None:
    """`idmap`/`ridmap` without mappings take the container's user namespace mappings;
    without a user namespace there is nothing to take, and the spec requires an error."""
    for i, m in enumerate(p.mounts):
        if m.idmapped and not m.uid_map:
            if not (p.has("user") and p.uid_mappings and p.gid_mappings):
                raise ConfigError(f"mounts[{i}]: idmap without uidMappings/gidMappings needs "
                                  f"the container's user namespace mappings "
                                  f"(linux.uidMappings/gidMappings)")
            m.uid_map, m.gid_map = list(p.uid_mappings), list(p.gid_mappings)


def _devices(p: Plan, linux: dict[str, Any]) -> None:
    """The spec's devices, plus runc's default devices unless the spec names their path."""
    given = []
    for i, d in enumerate(_get(linux, "devices", list, "linux", [])):
        where = f"linux.devices[{i}]"
        _check(d, dict, where)
        path = _get(d, "path", str, where, "")
        if not path.startswith("/"):
            raise ConfigError(f"{where}.path: {path!r} must be an absolute path")
        kind = _get(d, "type", str, where, "")
        if kind not in ("c", "b", "u", "p"):
            raise ConfigError(f"{where}.type: invalid device type {kind!r}")
        major = minor = 0
        if kind != "p":
            if d.get("major") is None or d.get("minor") is None:
                raise ConfigError(f"{where}: major and minor are required for type {kind!r}")
            major = _int_range(d["major"], f"{where}.major", 0, MAX_MAJOR)
            minor = _int_range(d["minor"], f"{where}.minor", 0, MAX_MINOR)
        mode = d.get("fileMode")
        mode = 0o666 if mode is None else _uint(mode, f"{where}.fileMode") & 0o7777
        uid = _uint(d.get("uid", 0), f"{where}.uid")
        gid = _uint(d.get("gid", 0), f"{where}.gid")
        given.append(Device(os.path.normpath(path), "c" if kind == "u" else kind, major, minor,
                            mode, uid, gid))
    paths = {dev.path for dev in given}
    defaults = [Device(path, kind, major, minor, mode, 0, 0)
                for path, kind, major, minor, mode in opt.DEFAULT_DEVICES if path not in paths]
    p.devices = defaults + given


def _abs_paths(linux: dict[str, Any], key: str) -> list[str]:
    paths = _str_list(linux, key, "linux")
    for i, path in enumerate(paths):
        if not path.startswith("/"):
            raise ConfigError(f"linux.{key}[{i}]: {path!r} must be an absolute path")
    return paths


def _rootfs_propagation(p: Plan, linux: dict[str, Any]) -> None:
    prop = _get(linux, "rootfsPropagation", str, "linux", "")
    if prop and prop not in opt.PROPAGATION:
        raise ConfigError(f"linux.rootfsPropagation: {prop!r} is not supported")
    p.rootfs_propagation = opt.PROPAGATION.get(prop, 0)
    if p.no_pivot and p.rootfs_propagation & c.MS_PRIVATE:
        raise ConfigError("linux.rootfsPropagation: [r]private is not safe without pivot_root")


def _sysctl(p: Plan, linux: dict[str, Any]) -> None:
    sysctl = _get(linux, "sysctl", dict, "linux", {})
    for key, value in sysctl.items():
        where = f"linux.sysctl[{key!r}]"
        _check(value, str, where)
        if "/" in key or ".." in key or not key:
            raise ConfigError(f"{where}: invalid sysctl name")
        if key in opt.SYSCTL_IPC or key.startswith(opt.SYSCTL_IPC_PREFIX):
            if not p.has("ipc"):
                raise ConfigError(f"{where}: sysctl is not allowed in the host's ipc namespace")
        elif key.startswith(opt.SYSCTL_NET_PREFIX):
            if not p.has("network"):
                raise ConfigError(f"{where}: sysctl is not allowed in the host's network "
                                  "namespace")
        elif key in opt.SYSCTL_UTS:
            if not p.has("uts"):
                raise ConfigError(f"{where}: sysctl is not allowed in the host's uts namespace")
        else:
            raise ConfigError(f"{where}: sysctl is not in a separate kernel namespace")
        p.sysctl[key] = value


def _id_mappings(p: Plan, linux: dict[str, Any]) -> None:
    for key, target in (("uidMappings", p.uid_mappings), ("gidMappings", p.gid_mappings)):
        for i, m in enumerate(_get(linux, key, list, "linux", [])):
            target.append(_id_mapping(m, f"linux.{key}[{i}]"))
    if p.creates("user"):
        if not p.uid_mappings:
            raise ConfigError("linux.uidMappings: user namespaces enabled, but no uid mappings "
                              "found")
        if not p.gid_mappings:
            raise ConfigError("linux.gidMappings: user namespaces enabled, but no gid mappings "
                              "found")
    elif (p.uid_mappings or p.gid_mappings) and not p.has("user"):
        raise ConfigError("linux.uidMappings: user namespace mappings specified, but the user "
                          "namespace is not enabled")


def _time_offsets(p: Plan, linux: dict[str, Any]) -> None:
    offsets = _get(linux, "timeOffsets", dict, "linux", {})
    for clock, value in offsets.items():
        where = f"linux.timeOffsets[{clock!r}]"
        if clock not in opt.TIME_CLOCKS:
            raise ConfigError(f"{where}: unknown clock (use monotonic or boottime)")
        _check(value, dict, where)
        secs = _int_range(value.get("secs", 0), f"{where}.secs", -(1 << 63), (1 << 63) - 1)
        nanos = _uint(value.get("nanosecs", 0), f"{where}.nanosecs")
        if nanos >= 1_000_000_000:
            raise ConfigError(f"{where}.nanosecs: must be below 1000000000")
        p.time_offsets[clock] = (secs, nanos)
    if p.time_offsets and not p.creates("time"):
        raise ConfigError("linux.timeOffsets: time offsets need a new time namespace")


def _hooks(spec: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    hooks = _get(spec, "hooks", dict, "", {})
    out: dict[str, list[dict[str, Any]]] = {}
    for name, entries in hooks.items():
        if name not in opt.HOOKS:
            continue  # unknown hook kinds are ignored, as by runc
        _check(entries, list, f"hooks.{name}")
        checked = []
        for i, h in enumerate(entries):
            where = f"hooks.{name}[{i}]"
            _check(h, dict, where)
            path = _get(h, "path", str, where, "")
            if not path.startswith("/"):
                raise ConfigError(f"{where}.path: {path!r} must be an absolute path")
            hook: dict[str, Any] = {"path": path, "args": _str_list(h, "args", where),
                                    "env": _str_list(h, "env", where)}
            if h.get("timeout") is not None:
                timeout = _check(h["timeout"], int, f"{where}.timeout")
                if timeout <= 0:
                    raise ConfigError(f"{where}.timeout: must be greater than zero")
                timeout = _int_range(timeout, f"{where}.timeout", 1, INT32_MAX)
                hook["timeout"] = timeout
            checked.append(hook)
        if checked:
            out[name] = checked
    return out


def _memory_policy(linux: dict[str, Any]) -> tuple[int, list[int]] | None:
    """linux.memoryPolicy -> (mode | flags, nodes). The checks are runc's (which nodes a
    mode takes) plus the flag pair the kernel refuses; whether the nodes are online and
    in the container's cpuset only set_mempolicy itself can tell."""
    mpol = _get(linux, "memoryPolicy", dict, "linux")
    if mpol is None:
        return None
    where = "linux.memoryPolicy"
    mode = _get(mpol, "mode", str, where, "")
    if mode not in opt.MEMORY_POLICY_MODES:
        raise ConfigError(f"{where}.mode: invalid memory policy mode {mode!r} (one of "
                          f"{', '.join(opt.MEMORY_POLICY_MODES)})")
    value = opt.MEMORY_POLICY_MODES[mode]
    flags = _str_list(mpol, "flags", where)
    for i, flag in enumerate(flags):
        if flag not in opt.MEMORY_POLICY_FLAGS:
            raise ConfigError(f"{where}.flags[{i}]: invalid memory policy flag {flag!r}")
        value |= opt.MEMORY_POLICY_FLAGS[flag]
    if {"MPOL_F_STATIC_NODES", "MPOL_F_RELATIVE_NODES"} <= set(flags):
        raise ConfigError(f"{where}.flags: MPOL_F_STATIC_NODES and MPOL_F_RELATIVE_NODES "
                          "exclude each other")
    text = _get(mpol, "nodes", str, where, "")
    nodes = _id_list(text, f"{where}.nodes", "node", MAX_NUMNODES) if text.strip() else set()
    if mode in opt.MEMORY_POLICY_NO_NODES and nodes:
        raise ConfigError(f"{where}.nodes: memory policy mode {mode} requires 0 nodes but "
                          f"got {len(nodes)}")
    if mode in opt.MEMORY_POLICY_NEEDS_NODES and not nodes:
        raise ConfigError(f"{where}.nodes: memory policy mode {mode} requires at least one "
                          "node but got 0")
    return value, sorted(nodes)


def _intel_rdt(linux: dict[str, Any]) -> IntelRdt | None:
    """linux.intelRdt -> the group and the schemata lines; whether resctrl is mounted and
    has CAT, MBA and monitoring is `create`'s check (ocirt.resctrl)."""
    conf = _get(linux, "intelRdt", dict, "linux")
    if conf is None:
        return None
    where = "linux.intelRdt"
    rdt = IntelRdt()
    rdt.clos_id = _get(conf, "closID", str, where, "")
    if rdt.clos_id in (".", "..") or (rdt.clos_id != "/" and "/" in rdt.clos_id):
        raise ConfigError(f"{where}.closID: invalid CLOS ID {rdt.clos_id!r} (a group "
                          "name in the resctrl filesystem, or \"/\" for the default group)")
    l3 = _get(conf, "l3CacheSchema", str, where, "")
    mb = _get(conf, "memBwSchema", str, where, "")
    if mb and not mb.startswith("MB:"):
        raise ConfigError(f"{where}.memBwSchema: {mb!r} must start with \"MB:\"")
    lines = [(f"{where}.l3CacheSchema", l3), (f"{where}.memBwSchema", mb)]
    lines += [(f"{where}.schemata[{i}]", line)
              for i, line in enumerate(_str_list(conf, "schemata", where))]
    for name, line in lines:
        if "\n" in line:
            raise ConfigError(f"{name}: must be a single line (no newline)")
    rdt.schemata = [line for _, line in lines if line]
    rdt.l3_cache, rdt.mem_bw = bool(l3), bool(mb)
    rdt.monitoring = bool(_get(conf, "enableMonitoring", bool, where, False))
    return rdt


def _personality(p: Plan, linux: dict[str, Any]) -> None:
    pers = _get(linux, "personality", dict, "linux")
    if pers is None:
        return
    domain = _get(pers, "domain", str, "linux.personality", "")
    if domain not in opt.PERSONALITY_DOMAINS:
        raise ConfigError(f"linux.personality.domain: invalid domain {domain!r}")
    if _str_list(pers, "flags", "linux.personality"):
        raise ConfigError("linux.personality.flags: no flags are supported")
    p.personality = opt.PERSONALITY_DOMAINS[domain]
