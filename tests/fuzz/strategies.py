"""Strategies for hostile input: JSON values that break naive parsers (NUL bytes, lone
surrogates, huge and negative numbers, floats where integers go, deep nesting, the
kernel's limits and one past them), mutations of a valid document, and a guard that
turns a hang into a failure."""

from __future__ import annotations

import contextlib
import copy
import signal
from collections.abc import Iterator
from typing import Any

from hypothesis import strategies as st

# Keys of runtime-spec documents, so that generated objects reach the fields' checks.
SPEC_KEYS = (
    "ociVersion", "process", "root", "path", "readonly", "hostname", "domainname",
    "mounts", "destination", "source", "type", "options", "uidMappings", "gidMappings",
    "containerID", "hostID", "size", "linux", "namespaces", "devices", "major", "minor",
    "fileMode", "uid", "gid", "resources", "memory", "limit", "cpu", "cpus", "shares",
    "pids", "blockIO", "weight", "hugepageLimits", "unified", "rdma", "network",
    "cgroupsPath", "sysctl", "seccomp", "defaultAction", "architectures", "syscalls",
    "names", "action", "args", "index", "value", "valueTwo", "op", "errnoRet", "flags",
    "listenerPath", "maskedPaths", "readonlyPaths", "rootfsPropagation", "mountLabel",
    "timeOffsets", "monotonic", "secs", "nanosecs", "personality", "domain", "intelRdt",
    "netDevices", "name", "hooks", "prestart", "createRuntime", "poststart", "timeout",
    "env", "annotations", "terminal", "consoleSize", "height", "width", "cwd", "user",
    "additionalGids", "umask", "capabilities", "bounding", "effective", "inheritable",
    "permitted", "ambient", "rlimits", "soft", "hard", "noNewPrivileges",
    "oomScoreAdj", "apparmorProfile", "selinuxLabel", "ioPriority", "class", "priority",
    "scheduler", "policy", "nice", "runtime", "deadline", "period", "execCPUAffinity",
    "initial", "final", "commandLine", "allow", "access",
)

HOSTILE_STRINGS = (
    "", "/", "\0", "a\0b", "/\0", "\ud800", "x\udc80y", "\udfff", "..", "../../etc/passwd",
    "/proc/self/fd/3", "²", "٣", "0-99999999999", "0-3,7", "-1", "1" * 5000, "a=b", "=",
    "=x", "A=\0", "CAP_SYS_ADMIN", "CAP_NOPE", "RLIMIT_NOFILE", "SCMP_ACT_ALLOW", "bind",
    "rbind", "ro", "idmap", "idmap=uids=0-1000-10;gids=0-1000-10", "tmpfs", "proc",
    "user", "mount", "network", "time", "c", "b", "p", "u", "rprivate", "LINUX32",
    "IOPRIO_CLASS_RT", "SCHED_FIFO", "monotonic", "kernel.domainname", "net.ipv4.x",
    "1.0.2", "2.0", "\n", "é", "\U0001f600",
)
EDGE_INTS = (
    -(1 << 63) - 1, -(1 << 63), -(1 << 31) - 1, -1001, -1000, -21, -20, -1, 0, 1, 7, 8,
    99, 100, 999, 1000, 1001, 4095, 4096, 65535, 65536, 65537, (1 << 20) - 1, 1 << 20,
    (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32, (1 << 63) - 1, 1 << 63, (1 << 64) - 1,
    1 << 64, 1 << 70, 10 ** 40,
)

texts = st.one_of(
    st.sampled_from(HOSTILE_STRINGS),
    st.text(alphabet=st.characters(blacklist_categories=()), max_size=12),
)
integers = st.one_of(st.sampled_from(EDGE_INTS),
                     st.integers(min_value=-(1 << 70), max_value=1 << 70))
scalars = st.one_of(
    st.none(), st.booleans(), integers, texts,
    st.floats(allow_nan=True, allow_infinity=True),
)
keys = st.one_of(st.sampled_from(SPEC_KEYS), texts)


def _nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


_trees = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)),
    max_leaves=12)
_deep = st.integers(min_value=60, max_value=200).map(_nested)  # printable when failing
_long = st.integers(min_value=65530, max_value=70000).map(lambda n: list(range(n)))
# Mostly small trees; one value in forty is deeply nested, one in forty a huge list.
json_values = st.integers(0, 39).flatmap(
    lambda n: _deep if n == 0 else _long if n == 1 else _trees)


@st.composite
def mutated(draw: Any, base: Any, max_mutations: int = 4) -> Any:
    """`base` with a few of its values replaced, removed or added: mostly well-formed,
    so that the checks behind the first ones are reached too."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(min_value=1, max_value=max_mutations))):
        doc = _mutate_once(draw, doc)
    return doc


def _mutate_once(draw: Any, doc: Any) -> Any:
    parent: Any = None
    key: Any = None
    node = doc
    while isinstance(node, (dict, list)) and node and draw(st.integers(0, 7)) > 0:
        parent = node
        key = draw(st.sampled_from(sorted(node, key=str) if isinstance(node, dict)
                                   else range(len(node))))
        node = node[key]
    choice = draw(st.integers(0, 7))
    if parent is None:
        if isinstance(doc, dict) and choice < 7:
            doc[draw(keys)] = draw(json_values)
            return doc
        return draw(json_values)
    if choice == 0 and isinstance(parent, dict):
        del parent[key]
    elif choice == 1 and isinstance(node, dict):
        node[draw(keys)] = draw(json_values)
    elif choice == 2 and isinstance(node, list):
        node.append(draw(_like(node[0]) if node else json_values))
    elif choice <= 5:
        parent[key] = draw(_like(node))  # the same JSON type: the field's own checks
    else:
        parent[key] = draw(json_values)
    return doc


def _like(value: Any, depth: int = 0) -> Any:
    """Values of the JSON type of `value`, hostile within that type."""
    if depth > 2:
        return json_values
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return integers
    if isinstance(value, float):
        return st.floats(allow_nan=True, allow_infinity=True)
    if isinstance(value, str):
        return texts
    if isinstance(value, list):
        return st.lists(_like(value[0], depth + 1) if value else json_values, max_size=5)
    if isinstance(value, dict):
        return st.dictionaries(keys, json_values, max_size=4)
    return json_values


class Hang(Exception):
    """An example ran past its time."""


@contextlib.contextmanager
def no_hang(seconds: int = 10) -> Iterator[None]:
    """Fail an example that does not finish in `seconds` (SIGALRM), instead of hanging."""
    def expired(signum: int, frame: object) -> None:
        raise Hang(f"did not finish within {seconds}s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
