"""Device-cgroup rules: the v1 semantics, emulated, so v1 and v2 enforce the same thing.

A list of rules is applied in order to a cgroup that starts by denying everything
(runc's model): an `a` rule resets the whole state to allow-all or deny-all, any other
rule adds an exception to the current mode or takes access away from one. The result
(`DeviceState`) is a default plus ordered exceptions; v1 gets it written as
devices.deny/devices.allow lines (`write_plan`), v2 gets it compiled into an eBPF
program (`ocirt.cgroups.bpf`).

Like runc, taking part of a wildcard exception away (`deny c 1:3` after `allow c *:*`)
is refused: v1 would silently ignore it, and a user would believe the device is denied.
Unlike runc, exceptions keep their order (runc sorts them), so devices.list shows the
rules in the order they were given, as the runtime-spec asks.
"""

from __future__ import annotations

from ocirt.cgroups.resources import DeviceRule
from ocirt.errors import ConfigError
from ocirt.spec import options

# An exception's identity: (type, major, minor), -1 = any.
Key = tuple[str, int, int]


class DeviceState:
    """Default action plus ordered exceptions (key -> access letters)."""

    def __init__(self, default_allow: bool = False) -> None:
        self.default_allow = default_allow
        self.exceptions: dict[Key, str] = {}

    def apply(self, rule: DeviceRule) -> None:
        if rule.type == "a":
            self.default_allow = rule.allow
            self.exceptions = {}
            return
        key = (rule.type, rule.major, rule.minor)
        if rule.allow == self.default_allow:
            self._take_away(key, rule)
        else:
            self.exceptions[key] = _union(self.exceptions.get(key, ""), rule.access)

    def _take_away(self, key: Key, rule: DeviceRule) -> None:
        kind, major, minor = key
        for wide in ((kind, -1, minor), (kind, major, -1), (kind, -1, -1)):
            if wide == key:
                continue
            overlap = set(self.exceptions.get(wide, "")) & set(rule.access)
            if overlap:
                raise ConfigError(
                    f"device rule {rule.cgroup_string()} ({'allow' if rule.allow else 'deny'})"
                    f" would punch a hole in the wider rule {_key_string(wide)} "
                    f"{self.exceptions[wide]}, which the devices cgroup cannot do")
        left = "".join(ch for ch in self.exceptions.get(key, "") if ch not in rule.access)
        if left:
            self.exceptions[key] = left
        else:
            self.exceptions.pop(key, None)

    def rules(self) -> list[DeviceRule]:
        """The exceptions as rules (their action is the opposite of the default)."""
        return [DeviceRule(not self.default_allow, kind, major, minor, access)
                for (kind, major, minor), access in self.exceptions.items()]

    def allows(self, kind: str, major: int, minor: int, access: str) -> bool:
        """The kernel's v1 decision for one access (the reference the eBPF program is
        tested against): in deny-all mode one exception must grant every requested
        letter; in allow-all mode any exception sharing a letter denies."""
        for (ekind, emajor, eminor), eaccess in self.exceptions.items():
            if ekind != kind or emajor not in (-1, major) or eminor not in (-1, minor):
                continue
            if self.default_allow and set(access) & set(eaccess):
                return False
            if not self.default_allow and set(access) <= set(eaccess):
                return True
        return self.default_allow


def _union(a: str, b: str) -> str:
    return "".join(ch for ch in "rwm" if ch in a or ch in b)


def _key_string(key: Key) -> str:
    kind, major, minor = key
    return DeviceRule(True, kind, major, minor, "").cgroup_string().strip()


def emulate(rules: list[DeviceRule]) -> DeviceState:
    """The state a deny-all cgroup reaches after `rules`."""
    state = DeviceState(default_allow=False)
    for rule in rules:
        state.apply(rule)
    return state


def default_rules(devices: list | None = None) -> list[DeviceRule]:
    """runc's always-allowed devices (/dev/null, zero, full, random, urandom, tty, ptmx,
    pts, tun and mknod of anything). The rule for a default device node is left out when
    the config puts another device at its path (`devices`: the plan's device nodes)."""
    by_path = {d.path: (d.type, d.major, d.minor) for d in devices or []}
    replaced = set()
    for path, kind, major, minor, _ in options.DEFAULT_DEVICES:
        if path in by_path and by_path[path] != (kind, major, minor):
            replaced.add((kind, major, minor))
    return [DeviceRule(True, kind, major, minor, access)
            for kind, major, minor, access in options.DEFAULT_DEVICE_RULES
            if (kind, major, minor) not in replaced]


def write_plan(state: DeviceState) -> list[tuple[str, str]]:
    """The v1 writes that give a fresh cgroup `state`: (file, line) pairs, the reset to
    the default first."""
    reset = ("devices.allow", "a") if state.default_allow else ("devices.deny", "a")
    target = "devices.deny" if state.default_allow else "devices.allow"
    return [reset] + [(target, rule.cgroup_string()) for rule in state.rules()]


def parse_list(text: str) -> DeviceState:
    """A v1 devices.list back into a state (`a *:* rwm` alone means allow-all)."""
    state = DeviceState(default_allow=False)
    for line in text.splitlines():
        fields = line.replace(":", " ").split()
        if len(fields) != 4:
            continue
        kind, major, minor, access = fields
        if kind == "a":
            return DeviceState(default_allow=True)
        state.exceptions[(kind, -1 if major == "*" else int(major),
                          -1 if minor == "*" else int(minor))] = access
    return state
