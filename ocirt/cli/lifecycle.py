"""Handlers for the lifecycle commands: create, start, run, state, kill, delete, list.

Each handler turns flags into arguments and makes one call into `ocirt.runtime`.
"""

from __future__ import annotations

import sys

from ocirt.cli.parser import Options
from ocirt.state import Store

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from ocirt.cli import Globals


def _create_options(g: Globals, opts: Options):  # type: ignore[no-untyped-def]
    from ocirt.runtime.create import CreateOptions

    copts = CreateOptions(
        bundle=opts.bundle, pid_file=opts.pid_file, console_socket=opts.console_socket,
        no_pivot=opts.no_pivot, no_new_keyring=opts.no_new_keyring,
        preserve_fds=opts.preserve_fds, systemd_cgroup=g.systemd_cgroup, rootless=g.rootless,
    )
    copts.sif_keys, copts.sif_pgp_keys = opts.key or [], opts.pgp_key or []
    return copts


def _image_bundle(g: Globals, opts: Options, args: list[str], copts) -> None:  # type: ignore[no-untyped-def]
    """--image: the container's bundle, made from the SIF image (after verification)."""
    from ocirt.errors import UsageError

    if not opts.image:
        if len(args) > 1:
            raise UsageError("arguments after the container id need --image")
        if opts.writable_tmpfs:
            raise UsageError("--writable-tmpfs needs --image")
        return
    if opts.bundle:
        raise UsageError("--image and --bundle exclude each other")
    from ocirt.runtime import image

    checked_by = image.policy(opts.key or [], opts.pgp_key or [])
    copts.bundle = copts.sif_bundle = image.bundle_from_image(
        Store(g.root), args[0], opts.image, args[1:], checked_by,
        writable="tmpfs" if opts.writable_tmpfs else None)


class _owned_bundle:  # noqa: N801 - a context manager, named like a function
    """A bundle made from --image goes again if the container could not be made."""

    def __init__(self, copts) -> None:  # type: ignore[no-untyped-def]
        self.copts = copts

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, *rest: object) -> None:
        if kind is not None and self.copts.sif_bundle:
            from ocirt.runtime.image import remove_bundle

            remove_bundle(self.copts.sif_bundle)


def create(g: Globals, opts: Options, args: list[str]) -> int:
    from ocirt.runtime.create import create as do_create

    copts = _create_options(g, opts)
    _image_bundle(g, opts, args, copts)
    with _owned_bundle(copts):
        do_create(Store(g.root), args[0], copts)
    return 0


def run(g: Globals, opts: Options, args: list[str]) -> int:
    from ocirt.runtime.run import run as do_run

    copts = _create_options(g, opts)
    _image_bundle(g, opts, args, copts)
    with _owned_bundle(copts):
        return do_run(Store(g.root), args[0], copts, opts.detach, opts.keep)


def start(g: Globals, opts: Options, args: list[str]) -> int:
    from ocirt.runtime.start import start as do_start

    do_start(Store(g.root), args[0])
    return 0


def state(g: Globals, opts: Options, args: list[str]) -> int:
    from ocirt.jsonio import dumps_pretty
    from ocirt.runtime.query import state as get_state

    sys.stdout.write(dumps_pretty(get_state(Store(g.root), args[0])) + "\n")
    return 0


def kill(g: Globals, opts: Options, args: list[str]) -> int:
    from ocirt.linux.signals import SIGTERM, parse_signal
    from ocirt.runtime.kill import kill as do_kill

    sig = parse_signal(args[1]) if len(args) > 1 else SIGTERM
    do_kill(Store(g.root), args[0], sig, opts.all)
    return 0


def delete(g: Globals, opts: Options, args: list[str]) -> int:
    from ocirt.runtime.delete import delete as do_delete

    do_delete(Store(g.root), args[0], opts.force)
    return 0


def list_containers(g: Globals, opts: Options, args: list[str]) -> int:
    from ocirt.errors import UsageError
    from ocirt.runtime.query import list_containers as do_list
    from ocirt.runtime.query import table

    rows = do_list(Store(g.root))
    if opts.quiet:
        sys.stdout.write("".join(f"{r['id']}\n" for r in rows))
    elif opts.format == "json":
        from ocirt.jsonio import dumps

        sys.stdout.write(dumps(rows) + "\n")
    elif opts.format == "table":
        sys.stdout.write(table(rows))
    else:
        raise UsageError(f"invalid format option: {opts.format}")
    return 0
