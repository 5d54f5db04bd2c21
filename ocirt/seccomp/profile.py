"""`linux.seccomp` checked and converted into plain values, with no library involved.

Everything a user can get wrong is reported here as one line naming the field
(`linux.seccomp.syscalls[3].action: unknown action "SCMP_ACT_FOO"`). The conversion
follows runc's (libcontainer/specconv and libcontainer/seccomp):

* a profile with neither a default action nor syscalls means no seccomp at all;
* without `flags`, SECCOMP_FILTER_FLAG_SPEC_ALLOW is set where the kernel knows it; an
  explicit list (even empty) is taken as it is (runc 1.2 and crun; runc 1.1 refused any
  flags); SECCOMP_FILTER_FLAG_TSYNC, which runc accepts and ignores, is applied;
* SCMP_ACT_KILL is SCMP_ACT_KILL_THREAD; SCMP_ACT_ERRNO and SCMP_ACT_TRACE return EPERM
  unless errnoRet (defaultErrnoRet for the default action) says otherwise;
* SCMP_ACT_NOTIFY needs listenerPath, cannot be the default action, and cannot apply to
  `write` (runc refuses it; we refuse it too, and `sendmsg`, which our init uses to hand
  the listener to the agent after the filter is loaded).
"""

from __future__ import annotations

from ocirt.errors import ConfigError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# Actions: the value libseccomp (and the kernel) uses; ERRNO and TRACE carry data.
ACT_KILL_PROCESS = 0x80000000
ACT_KILL_THREAD = 0x00000000
ACT_TRAP = 0x00030000
ACT_ERRNO = 0x00050000
ACT_NOTIFY = 0x7FC00000
ACT_TRACE = 0x7FF00000
ACT_LOG = 0x7FFC0000
ACT_ALLOW = 0x7FFF0000

ACTIONS = {
    "SCMP_ACT_KILL": ACT_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": ACT_KILL_PROCESS,
    "SCMP_ACT_KILL_THREAD": ACT_KILL_THREAD,
    "SCMP_ACT_TRAP": ACT_TRAP,
    "SCMP_ACT_ERRNO": ACT_ERRNO,
    "SCMP_ACT_TRACE": ACT_TRACE,
    "SCMP_ACT_ALLOW": ACT_ALLOW,
    "SCMP_ACT_LOG": ACT_LOG,
    "SCMP_ACT_NOTIFY": ACT_NOTIFY,
}
# Actions that let a syscall the profile does not know run (or be decided by a tracer):
# runc adds no -ENOSYS stub when the default action is one of these.
PERMISSIVE_ACTIONS = frozenset({ACT_ALLOW, ACT_LOG, ACT_TRACE})

# enum scmp_compare
OPERATORS = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}

# seccomp(2) filter flags
FLAG_TSYNC = 1 << 0
FLAG_LOG = 1 << 1
FLAG_SPEC_ALLOW = 1 << 2
FLAG_NEW_LISTENER = 1 << 3
FLAG_TSYNC_ESRCH = 1 << 4
FLAG_WAIT_KILLABLE_RECV = 1 << 5

FLAGS = {
    "SECCOMP_FILTER_FLAG_TSYNC": FLAG_TSYNC,
    "SECCOMP_FILTER_FLAG_LOG": FLAG_LOG,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": FLAG_SPEC_ALLOW,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": FLAG_WAIT_KILLABLE_RECV,
}

# The runtime-spec's architectures; libseccomp's name is the lower-case rest.
ARCHES = (
    "SCMP_ARCH_X86", "SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64", "SCMP_ARCH_MIPS", "SCMP_ARCH_MIPS64", "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL", "SCMP_ARCH_MIPSEL64", "SCMP_ARCH_MIPSEL64N32", "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64", "SCMP_ARCH_PPC64LE", "SCMP_ARCH_S390", "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC", "SCMP_ARCH_PARISC64", "SCMP_ARCH_RISCV64", "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K", "SCMP_ARCH_SH", "SCMP_ARCH_SHEB",
)

# Syscalls the init makes after loading the filter, which a notify rule would deadlock.
NOTIFY_FORBIDDEN = ("write", "sendmsg")

EPERM = 1
MAX_RET_DATA = 0xFFFF  # the 16 data bits of SECCOMP_RET_ERRNO / SECCOMP_RET_TRACE
UINT64_MAX = (1 << 64) - 1


def libseccomp_arch_name(spec_name: str) -> str:
    return spec_name[len("SCMP_ARCH_"):].lower()


class Rule:
    """One syscall name with its action and argument conditions."""

    __slots__ = ("name", "action", "conditions", "where")

    def __init__(self, name: str, action: int, conditions: list[tuple[int, int, int, int]],
                 where: str) -> None:
        self.name = name
        self.action = action
        self.conditions = conditions  # (index, op, datum_a, datum_b)
        self.where = where  # the field, for errors: linux.seccomp.syscalls[3]


class Profile:
    """A checked `linux.seccomp`."""

    def __init__(self, default_action: int) -> None:
        self.default_action = default_action
        self.architectures: list[str] = []  # runtime-spec names
        self.flag_names: list[str] | None = None  # None: absent (runc sets SPEC_ALLOW)
        self.rules: list[Rule] = []
        self.listener_path = ""
        self.listener_metadata = ""

    @property
    def flags(self) -> int:
        bits = 0
        for name in self.flag_names or ():
            bits |= FLAGS[name]
        return bits

    @property
    def uses_notify(self) -> bool:
        return any(rule.action == ACT_NOTIFY for rule in self.rules)

    @property
    def default_errno(self) -> int | None:
        """The errno the default action returns, if it is SCMP_ACT_ERRNO."""
        if self.default_action & 0xFFFF0000 == ACT_ERRNO:
            return self.default_action & 0xFFFF
        return None


def parse(seccomp: Any) -> Profile | None:
    """The profile, or None when it asks for no filter (runc: no default action and no
    syscalls)."""
    where = "linux.seccomp"
    if not isinstance(seccomp, dict):
        raise ConfigError(f"{where}: must be an object")
    syscalls = _list(seccomp, "syscalls", where)
    if not seccomp.get("defaultAction") and not syscalls:
        return None
    default_errno = _errno_ret(seccomp, "defaultErrnoRet", where)
    profile = Profile(action_value(seccomp.get("defaultAction"), default_errno,
                                   f"{where}.defaultAction"))
    if profile.default_action == ACT_NOTIFY:
        raise ConfigError(f"{where}.defaultAction: SCMP_ACT_NOTIFY cannot be used as "
                          "default action")
    profile.architectures = _architectures(seccomp, where)
    profile.flag_names = _flags(seccomp, where)
    profile.listener_path = _string(seccomp, "listenerPath", where)
    profile.listener_metadata = _string(seccomp, "listenerMetadata", where)
    for i, entry in enumerate(syscalls):
        profile.rules.extend(_rules(entry, f"{where}.syscalls[{i}]"))
    if profile.uses_notify and not profile.listener_path:
        raise ConfigError(f"{where}.listenerPath: must be set when a syscall uses "
                          "SCMP_ACT_NOTIFY")
    return profile


def action_value(name: Any, errno_ret: int | None, where: str) -> int:
    """The numeric action for `name`, with errnoRet folded in (runc's getAction)."""
    if name is None or name == "":
        raise ConfigError(f"{where}: missing action")
    if not isinstance(name, str) or name not in ACTIONS:
        raise ConfigError(f"{where}: unknown action {_quote(name)}")
    value = ACTIONS[name]
    if value in (ACT_ERRNO, ACT_TRACE):
        value |= EPERM if errno_ret is None else errno_ret
    elif errno_ret is not None:
        # config-linux.md: errnoRet goes with the errno-returning actions only (runc
        # silently ignores it elsewhere)
        raise ConfigError(f"{where}: errnoRet is only valid with SCMP_ACT_ERRNO or "
                          f"SCMP_ACT_TRACE, not {name}")
    return value


def _rules(entry: Any, where: str) -> list[Rule]:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be an object")
    names = entry.get("names")
    if names is None:
        names = []
    if not isinstance(names, list):
        raise ConfigError(f"{where}.names: must be a list of syscall names")
    action = action_value(entry.get("action"), _errno_ret(entry, "errnoRet", where),
                          f"{where}.action")
    conditions = [_condition(arg, f"{where}.args[{j}]")
                  for j, arg in enumerate(_list(entry, "args", where))]
    rules = []
    for j, name in enumerate(names):
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{where}.names[{j}]: must be a non-empty syscall name")
        if action == ACT_NOTIFY and name in NOTIFY_FORBIDDEN:
            raise ConfigError(f"{where}: SCMP_ACT_NOTIFY cannot be used for the {name} "
                              "syscall")
        rules.append(Rule(name, action, conditions, where))
    return rules


def _condition(arg: Any, where: str) -> tuple[int, int, int, int]:
    if not isinstance(arg, dict):
        raise ConfigError(f"{where}: must be an object")
    index = arg.get("index")
    if not _is_int(index) or not 0 <= index <= 5:
        raise ConfigError(f"{where}.index: must be 0 to 5 (syscalls have 6 arguments)")
    op = arg.get("op")
    if not isinstance(op, str) or op not in OPERATORS:
        raise ConfigError(f"{where}.op: unknown operator {_quote(op)}")
    values = []
    for key in ("value", "valueTwo"):
        value = arg.get(key, 0)
        if not _is_int(value) or not 0 <= value <= UINT64_MAX:
            raise ConfigError(f"{where}.{key}: must be an unsigned 64-bit integer")
        values.append(value)
    # For SCMP_CMP_MASKED_EQ `value` is the mask and `valueTwo` the value compared with
    # the masked argument: exactly libseccomp's datum_a and datum_b.
    return index, OPERATORS[op], values[0], values[1]


def _architectures(seccomp: dict[str, Any], where: str) -> list[str]:
    arches = _list(seccomp, "architectures", where)
    for i, arch in enumerate(arches):
        if arch not in ARCHES:
            raise ConfigError(f"{where}.architectures[{i}]: unknown architecture "
                              f"{_quote(arch)}")
    return list(arches)


def _flags(seccomp: dict[str, Any], where: str) -> list[str] | None:
    if seccomp.get("flags") is None:
        return None
    flags = _list(seccomp, "flags", where)
    for i, flag in enumerate(flags):
        if not isinstance(flag, str) or flag not in FLAGS:
            raise ConfigError(f"{where}.flags[{i}]: unknown flag {_quote(flag)}")
    return list(flags)


def _errno_ret(obj: dict[str, Any], key: str, where: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if not _is_int(value) or not 0 <= value <= MAX_RET_DATA:
        raise ConfigError(f"{where}.{key}: must be an errno number from 0 to {MAX_RET_DATA}")
    return int(value)


def _list(obj: dict[str, Any], key: str, where: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{where}.{key}: must be a list")
    return value


def _string(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key}: must be a string")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _quote(value: Any) -> str:
    """A value as JSON would show it (runc's messages quote with double quotes)."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)
