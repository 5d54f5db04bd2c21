"""The table behind `ocirt ps`: the host's `ps` output cut to the container's PIDs."""

from __future__ import annotations

from ocirt.errors import OcirtError


def ps_table(pids: list[int], ps_args: list[str]) -> str:
    """runc's table: `ps ARGS` (default -ef), its header, and the lines whose PID column
    names a process of the container."""
    from ocirt.linux.spawn import capture

    try:
        code, stdout, stderr = capture(["ps", *(ps_args or ["-ef"])])
    except FileNotFoundError:
        raise OcirtError("ps: executable file not found in $PATH") from None
    if code != 0:
        raise OcirtError(f"ps: exit status {code}: {(stdout + stderr).strip()}")
    lines = stdout.split("\n")
    header = lines[0]
    try:
        column = header.split().index("PID")
    except ValueError:
        raise OcirtError("couldn't find PID field in ps output") from None
    wanted = set(pids)
    out = [header]
    for line in lines[1:]:
        fields = line.split()
        if not fields:
            continue
        try:
            pid = int(fields[column])
        except (ValueError, IndexError):
            raise OcirtError(f"unable to parse pid: {line!r}") from None
        if pid in wanted:
            out.append(line)
    return "\n".join(out) + "\n"
