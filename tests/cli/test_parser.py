"""The command-line parser: runc's flag spellings and errors (no root needed)."""

from __future__ import annotations

import pytest

from ocirt.cli.commands import COMMANDS, GLOBAL_FLAGS
from ocirt.cli.parser import check_arg_count, parse
from ocirt.errors import UsageError


def test_global_flags_stop_at_the_command():
    opts, rest = parse(GLOBAL_FLAGS, ["--root", "/r", "--log=/l", "--log-format", "json",
                                      "--debug", "state", "--bogus", "x"], stop_at_first=True)
    assert (opts.root, opts.log, opts.log_format, opts.debug) == ("/r", "/l", "json", True)
    assert rest == ["state", "--bogus", "x"]


@pytest.mark.parametrize("argv", [
    ["--bundle", "/b", "--pid-file", "/p", "--console-socket", "/s", "c1"],
    ["-b", "/b", "--pid-file=/p", "--console-socket=/s", "c1"],
    ["-bundle", "/b", "-pid-file", "/p", "-console-socket", "/s", "c1"],
    ["c1", "--bundle", "/b", "--pid-file", "/p", "--console-socket", "/s"],
])
def test_create_flag_spellings(argv):
    cmd = COMMANDS["create"]
    opts, args = parse(cmd.flags, argv, interspersed=cmd.interspersed)
    assert (opts.bundle, opts.pid_file, opts.console_socket, args) == ("/b", "/p", "/s", ["c1"])


def test_bool_and_int_flags():
    cmd = COMMANDS["create"]
    opts, _ = parse(cmd.flags, ["--no-pivot", "--no-new-keyring=false", "--preserve-fds", "2",
                                "c"])
    assert opts.no_pivot is True and opts.no_new_keyring is False and opts.preserve_fds == 2


def test_unknown_flag_and_missing_value():
    cmd = COMMANDS["create"]
    with pytest.raises(UsageError, match="flag provided but not defined: -bogus"):
        parse(cmd.flags, ["--bogus", "c"])
    with pytest.raises(UsageError, match="flag needs an argument: -bundle"):
        parse(cmd.flags, ["c", "--bundle"])
    with pytest.raises(UsageError, match="parse error"):
        parse(cmd.flags, ["--preserve-fds", "two", "c"])


def test_exec_keeps_the_command_line_verbatim():
    cmd = COMMANDS["exec"]
    opts, args = parse(cmd.flags, ["-t", "--env", "A=1", "-e", "B=2", "c1", "ls", "-l", "--x"],
                       interspersed=cmd.interspersed)
    assert opts.tty is True and opts.env == ["A=1", "B=2"]
    assert args == ["c1", "ls", "-l", "--x"]


def test_double_dash_ends_flags():
    cmd = COMMANDS["kill"]
    opts, args = parse(cmd.flags, ["-a", "--", "c1", "-9"])
    assert opts.all is True and args == ["c1", "-9"]


def test_argument_counts_use_runcs_messages():
    with pytest.raises(UsageError, match='"kill" requires a minimum of 1 argument'):
        check_arg_count(COMMANDS["kill"], [])
    with pytest.raises(UsageError, match='"kill" requires a maximum of 2 argument'):
        check_arg_count(COMMANDS["kill"], ["a", "b", "c"])
    with pytest.raises(UsageError, match='"state" requires exactly 1 argument'):
        check_arg_count(COMMANDS["state"], [])
    check_arg_count(COMMANDS["kill"], ["a", "KILL"])
