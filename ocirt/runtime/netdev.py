"""linux.netDevices: existing host network interfaces moved into the container's network
namespace (runtime-spec config-linux.md, "Network Devices"), as runc does it.

For each device: take it down on the host, note its permanent addresses of global scope,
move and rename it in one RTM_NEWLINK (IFLA_NET_NS_FD + IFLA_IFNAME, so the new name can
never clash in between), then inside the container's namespace add those addresses back
(the kernel drops them on the move) and bring it up. Nothing is configured beyond that:
routes and DNS belong to the engine's network plugins.

The container side is reached through a netlink socket opened by a short-lived thread that
joined the namespace (setns(CLONE_NEWNET) changes only the calling thread), so ocirt never
leaves the host's network namespace itself. A failed create moves the devices back under
their host names with their addresses; on delete the kernel's rule applies, as with runc:
physical devices return to the host when the namespace dies, virtual ones go with it.

pyroute2 is imported only here, only when a config has netDevices.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from ocirt.errors import OcirtError, errno_text

IFA_F_PERMANENT = 0x80
RT_SCOPE_UNIVERSE = 0
IFF_UP = 0x1


class Moved:
    """A device now in the container: enough to put it back as it was."""

    def __init__(self, host_name: str, name: str, was_up: bool,
                 addresses: list[tuple[int, str, int]]) -> None:
        self.host_name = host_name
        self.name = name
        self.was_up = was_up
        self.addresses = addresses  # (family, address, prefix length)


class MovedDevices:
    """The devices moved into a container, and a descriptor of its network namespace
    held until create is over: the init may die (its exec failing) before a failed
    create puts them back, and a namespace that nothing holds takes its veth devices
    with it (physical ones fall back to the host's namespace under their new names)."""

    def __init__(self, netns: int) -> None:
        self.netns = netns
        self.devices: list[Moved] = []

    def close(self) -> None:
        if self.netns >= 0:
            os.close(self.netns)
            self.netns = -1


def move_devices(devices: dict[str, dict[str, Any]], init_pid: int) -> MovedDevices:
    """Move every device of `devices` into the network namespace of `init_pid`; on a
    failure the ones already moved go back before the error is raised. The caller
    closes what it returns once create is over (after `move_back` on a failure)."""
    from pyroute2 import IPRoute

    held = MovedDevices(_open_netns(init_pid))
    try:
        with IPRoute() as host:
            for host_name, options in devices.items():
                name = options.get("name") or host_name
                device = _move_one(host, host_name, name, held.netns)
                held.devices.append(device)
                _in_netns(held.netns, lambda ns, d=device: _configure(ns, d))
    except BaseException:
        move_back(held)
        held.close()
        raise
    return held


def _move_one(host: Any, host_name: str, name: str, netns: int) -> Moved:
    index = _lookup(host, host_name, f"network device {host_name!r} not found on the host")
    link = host.get_links(index)[0]
    was_up = bool(link["flags"] & IFF_UP)
    addresses = [a for a in (_address(m) for m in host.get_addr(index=index)) if a]
    _netlink(f"set network device {host_name!r} down",
             lambda: host.link("set", index=index, state="down"))
    _netlink(f"move network device {host_name!r} into the container as {name!r}",
             lambda: host.link("set", index=index, net_ns_fd=netns, ifname=name))
    return Moved(host_name, name, was_up, addresses)


def _configure(ns: Any, device: Moved) -> None:
    """Inside the container: the addresses back, the link up."""
    index = _lookup(ns, device.name, f"network device {device.name!r} not found in the "
                                     "container after the move")
    for family, address, prefix in device.addresses:
        _netlink(f"add address {address}/{prefix} to {device.name!r}",
                 lambda a=address, p=prefix, f=family: ns.addr("add", index=index, address=a,
                                                               prefixlen=p, family=f))
    _netlink(f"set network device {device.name!r} up",
             lambda: ns.link("set", index=index, state="up"))


def move_back(held: MovedDevices) -> None:
    """Undo: each device back on the host under its own name, addresses and state as
    they were. Best effort: a device that cannot be moved is skipped."""
    if not held.devices or held.netns < 0:
        return
    host_fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        for device in reversed(held.devices):
            try:
                _in_netns(held.netns, lambda ns, d=device: _return_one(ns, d, host_fd))
                _restore_on_host(device)
            except OcirtError:
                pass
    finally:
        os.close(host_fd)
    held.devices = []


def _return_one(ns: Any, device: Moved, host_fd: int) -> None:
    index = _lookup(ns, device.name, f"network device {device.name!r} not found")
    _netlink(f"move network device {device.name!r} back to the host",
             lambda: ns.link("set", index=index, state="down", net_ns_fd=host_fd,
                             ifname=device.host_name))


def _restore_on_host(device: Moved) -> None:
    from pyroute2 import IPRoute

    with IPRoute() as host:
        index = _lookup(host, device.host_name, "")
        for family, address, prefix in device.addresses:
            try:
                host.addr("add", index=index, address=address, prefixlen=prefix,
                          family=family)
            except Exception:  # noqa: BLE001 - already there, or refused: best effort
                pass
        if device.was_up:
            host.link("set", index=index, state="up")


def _address(msg: Any) -> tuple[int, str, int] | None:
    """(family, address, prefix) of a permanent address of global scope, else None."""
    flags = msg.get_attr("IFA_FLAGS")
    if flags is None:
        flags = msg["flags"]
    if not flags & IFA_F_PERMANENT or msg["scope"] != RT_SCOPE_UNIVERSE:
        return None
    address = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
    return (msg["family"], address, msg["prefixlen"]) if address else None


def _open_netns(pid: int) -> int:
    try:
        return os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise OcirtError(f"open the container's network namespace: "
                         f"{errno_text(exc.errno or 0)}") from None


def _in_netns(netns: int, work: Callable[[Any], None]) -> None:
    """Run `work(ipr)` with a netlink socket inside the namespace `netns`, from a thread
    that joined it (the rest of ocirt stays in the host's namespace)."""
    failure: list[BaseException] = []

    def thread() -> None:
        from pyroute2 import IPRoute

        from ocirt.linux import consts, libc

        try:
            libc.setns(netns, consts.CLONE_NEWNET, "the container's network namespace")
            with IPRoute() as ns:
                work(ns)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            failure.append(exc)

    runner = threading.Thread(target=thread, name="ocirt-netns")
    runner.start()
    runner.join()
    if failure:
        exc = failure[0]
        if isinstance(exc, OcirtError):
            raise exc
        raise OcirtError(f"network devices: {exc}") from None


def _lookup(ipr: Any, name: str, missing: str) -> int:
    found = ipr.link_lookup(ifname=name)
    if not found:
        raise OcirtError(f"linux.netDevices: {missing}" if missing else name)
    return found[0]


def _netlink(what: str, call: Callable[[], Any]) -> None:
    """A netlink request whose failure becomes one clear line."""
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - pyroute2's NetlinkError is no OSError
        code = getattr(exc, "code", None) or getattr(exc, "errno", None)
        text = errno_text(code) if isinstance(code, int) and code > 0 else str(exc)
        raise OcirtError(f"linux.netDevices: {what}: {text}") from None
