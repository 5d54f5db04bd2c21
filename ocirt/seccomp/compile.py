"""From a checked profile to a loadable filter, with libseccomp, in the runtime's process.

The rules go to libseccomp as runc gives them: a rule whose action is the default action
is skipped (it would change nothing, and libseccomp refuses it); a syscall name that
libseccomp does not know is skipped with a debug message (the profile may be newer than
the library); conditions on distinct arguments form one rule (all must match), while
several conditions on the same argument each form a rule of their own (any may match).
The exported program gets runc's -ENOSYS stub in front (ocirt.seccomp.bpf).
"""

from __future__ import annotations

import errno

from ocirt.errors import ConfigError, OcirtError
from ocirt.seccomp import bpf, libseccomp
from ocirt.seccomp import profile as prof
from ocirt.seccomp.filter import Filter, Listener

# libseccomp's binary-tree optimisation pays off for long profiles; runc enables it
# above 32 rules (libseccomp <= 2.5.4 misbehaves with it on an empty rule set).
_OPTIMIZE_ABOVE = 32


def compile_profile(profile: prof.Profile) -> Filter:
    """The filter for `profile`; connects to the notify agent when the profile has one."""
    tokens = arch_tokens(profile)
    with libseccomp.FilterContext(profile.default_action) as ctx:
        for token, where in tokens[1:]:
            rc = ctx.add_arch(token)
            if rc < 0 and rc != -errno.EEXIST:
                raise ConfigError(f"{where}: libseccomp could not add the architecture: "
                                  f"{_strerror(rc)}")
        if len(profile.rules) > _OPTIMIZE_ABOVE:
            ctx.set_attr(libseccomp.ATTR_CTL_OPTIMIZE, 2)  # a speed-up only: ignore failure
        for rule in profile.rules:
            _add_rule(ctx, rule, profile.default_action)
        program = ctx.export_bpf()
    stub = bpf.encode(bpf.enosys_stub(enosys_limits(profile, [t for t, _ in tokens])))
    full = stub + program
    if len(full) // bpf.INSN.size > bpf.MAX_INSNS:
        raise ConfigError(f"linux.seccomp: the filter needs {len(full) // bpf.INSN.size} "
                          f"BPF instructions, more than the kernel's {bpf.MAX_INSNS}")
    flags = load_flags(profile)
    listener = None
    if profile.uses_notify:
        listener = Listener(profile.listener_path, profile.listener_metadata)
    return Filter(full, flags, listener)


def arch_tokens(profile: prof.Profile) -> list[tuple[int, str]]:
    """The native architecture's libseccomp token, then those the profile lists, each
    with the field it came from."""
    tokens = [(libseccomp.native_arch(), "native architecture")]
    for i, name in enumerate(profile.architectures):
        where = f"linux.seccomp.architectures[{i}]"
        token = libseccomp.arch_token(prof.libseccomp_arch_name(name))
        if not token:
            raise ConfigError(f"{where}: {name} is not supported by libseccomp "
                              f"{libseccomp.version()}")
        tokens.append((token, where))
    return tokens


def _add_rule(ctx: libseccomp.FilterContext, rule: prof.Rule, default_action: int) -> None:
    if rule.action == default_action:
        return
    number = libseccomp.syscall_number(rule.name)
    if number == libseccomp.NR_SCMP_ERROR:
        from ocirt import log

        log.debug(f'unknown seccomp syscall "{rule.name}" ignored')
        return
    indexes = [c[0] for c in rule.conditions]
    if len(set(indexes)) < len(indexes):
        groups = [[c] for c in rule.conditions]
    else:
        groups = [rule.conditions]
    for conditions in groups:
        rc = ctx.add_rule(rule.action, number, conditions)
        if rc < 0:
            raise ConfigError(f"{rule.where}: error adding seccomp rule for syscall "
                              f"{rule.name}: {_strerror(rc)}")


def enosys_limits(profile: prof.Profile, tokens: list[int]) -> list[bpf.Limit]:
    """Per architecture (the native one always included, as runc >= 1.1.15 does), the
    largest syscall number the profile names: the -ENOSYS stub answers above it. None
    when the default action lets unknown syscalls through, or already returns ENOSYS."""
    base = profile.default_action & 0xFFFF0000
    if base in prof.PERMISSIVE_ACTIONS or profile.default_errno == bpf.ENOSYS:
        return []
    names = sorted({rule.name for rule in profile.rules})
    by_token = _arch_names()
    x86_64 = libseccomp.arch_token("x86_64")
    limits = []
    for token in dict.fromkeys(tokens):
        largest = max((libseccomp.syscall_number(n, token) for n in names), default=0)
        if largest <= 0:
            continue  # runc warns "could not find any syscalls for arch"
        name = by_token.get(token, "")
        mode = {"x86_64": bpf.X86_64, "x32": bpf.X32, "s390": bpf.S390,
                "s390x": bpf.S390}.get(name, bpf.PLAIN)
        audit = x86_64 if name == "x32" else token  # x32's token is not an audit arch
        limits.append(bpf.Limit(audit, mode, largest))
    return limits


def _arch_names() -> dict[int, str]:
    names = {}
    for spec_name in prof.ARCHES:
        name = prof.libseccomp_arch_name(spec_name)
        token = libseccomp.arch_token(name)
        if token:
            names[token] = name
    return names


def load_flags(profile: prof.Profile) -> int:
    """The seccomp(2) flags: the profile's (each checked against the kernel), runc's
    default SPEC_ALLOW when it gives none, and NEW_LISTENER for notify."""
    for i, name in enumerate(profile.flag_names or ()):
        if not flag_supported(prof.FLAGS[name]):
            raise ConfigError(f"linux.seccomp.flags[{i}]: {name} is not supported by this "
                              "kernel")
    flags = profile.flags
    if profile.flag_names is None and flag_supported(prof.FLAG_SPEC_ALLOW):
        flags |= prof.FLAG_SPEC_ALLOW
    if profile.uses_notify:
        flags |= prof.FLAG_NEW_LISTENER
        if flags & prof.FLAG_TSYNC:
            flags |= prof.FLAG_TSYNC_ESRCH  # the kernel refuses TSYNC + NEW_LISTENER alone
    else:
        flags &= ~prof.FLAG_WAIT_KILLABLE_RECV  # means nothing (and is refused) without one
    return flags


def flag_supported(flag: int) -> bool:
    """Whether the kernel knows a filter flag: with no program, seccomp(2) fails with
    EFAULT after accepting the flags, EINVAL if it does not know one."""
    from ocirt.linux import libc

    if flag & prof.FLAG_WAIT_KILLABLE_RECV:
        flag |= prof.FLAG_NEW_LISTENER  # only valid together
    try:
        libc.seccomp_set_mode_filter(flag, None)
    except OSError as exc:
        return exc.errno == errno.EFAULT
    raise OcirtError("internal error: seccomp(2) accepted a filter probe")


def _strerror(rc: int) -> str:
    from ocirt.errors import errno_text

    return errno_text(-rc)
