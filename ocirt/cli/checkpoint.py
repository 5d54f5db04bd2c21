"""Handlers for `checkpoint` and `restore`: flags into `ocirt.runtime.criu.CriuOptions`,
then one call into `ocirt.runtime.checkpoint` or `ocirt.runtime.restore`."""

from __future__ import annotations

from ocirt.cli.parser import Options
from ocirt.state import Store

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from ocirt.cli import Globals
    from ocirt.runtime.criu import CriuOptions


def _criu_options(g: Globals, opts: Options) -> CriuOptions:
    from ocirt.runtime.criu import CriuOptions

    c = CriuOptions()
    c.binary = g.criu or "criu"
    for name in ("image_path", "work_path", "tcp_established", "ext_unix_sk", "shell_job",
                 "file_locks", "manage_cgroups_mode", "auto_dedup"):
        setattr(c, name, getattr(opts, name))
    c.empty_ns = list(opts.empty_ns or [])
    for name in ("parent_path", "leave_running", "pre_dump", "lsm_profile",
                 "lsm_mount_context", "lazy_pages", "page_server", "status_fd"):
        if hasattr(opts, name):
            setattr(c, name, getattr(opts, name))
    return c


def checkpoint(g: Globals, opts: Options, args: list[str]) -> int:
    from ocirt.runtime.checkpoint import checkpoint as do_checkpoint

    do_checkpoint(Store(g.root), args[0], _criu_options(g, opts), opts.sif,
                  opts.sign_key or [])
    return 0


def restore(g: Globals, opts: Options, args: list[str]) -> int:
    from ocirt.runtime.create import CreateOptions
    from ocirt.runtime.restore import restore as do_restore

    copts = CreateOptions(bundle=opts.bundle, pid_file=opts.pid_file,
                          console_socket=opts.console_socket, no_pivot=opts.no_pivot,
                          systemd_cgroup=g.systemd_cgroup, rootless=g.rootless)
    copts.sif_keys, copts.sif_pgp_keys = opts.key or [], opts.pgp_key or []
    if (copts.sif_keys or copts.sif_pgp_keys) and not opts.sif:
        from ocirt.errors import UsageError

        raise UsageError("--key and --pgp-key need --sif")
    return do_restore(Store(g.root), args[0], copts, _criu_options(g, opts), opts.detach,
                      opts.no_subreaper, opts.sif)
