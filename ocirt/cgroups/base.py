"""What the v1 and v2 cgroupfs managers share: making the directories (and only ever
removing what we made), rootless fallbacks, the create-time checks, update bookkeeping.

A cgroup directory that existed before `create` is joined but never removed; of the
directories we made, the container's own (the leaf) is removed with everything below it,
retrying while the kernel still lists exiting tasks, and the parents we made only if
they are empty (another container may have been put next to ours meanwhile).
"""

from __future__ import annotations

import os

from ocirt import log
from ocirt.cgroups import Birth, Manager, birth_from_state, fs
from ocirt.errors import OcirtError, errno_text

TYPE_CHECKING = False  # importing typing costs ~2 ms on the `state` path
if TYPE_CHECKING:
    from typing import Any

    from ocirt.cgroups.resources import DeviceRule, Resources

PREFIX = "linux.resources"


class FsManager(Manager):
    def __init__(self, *, rootless: bool = False, explicit: bool = False,
                 made: list[str] | None = None, resources: dict[str, Any] | None = None
                 ) -> None:
        self.rootless = rootless
        self.explicit = explicit  # cgroupsPath was given (rootless errors are then fatal)
        self.made = list(made or [])
        self.resources_raw = resources
        self.default_rules: list[DeviceRule] = []
        self.allow_busy = False  # systemd put the first process in before us

    # -- to be provided by v1/v2 -------------------------------------------------------

    def dirs(self) -> list[str]:
        """The container's cgroup directories (one per hierarchy)."""
        raise NotImplementedError

    def _drop(self, directory: str) -> None:
        """Forget a directory we may not create (rootless)."""
        raise NotImplementedError

    def _prepare(self, made: list[str]) -> None:
        """Per-version set-up of freshly made directories (cpuset values, controllers)."""

    def _set(self, res: Resources, full: Resources, devices: bool) -> None:
        raise NotImplementedError

    def _extra_state(self) -> dict[str, Any]:
        raise NotImplementedError

    # -- the interface -------------------------------------------------------------------

    def create(self) -> None:
        skipped = []
        try:
            self._check_unused()
            for directory in self.dirs():
                try:
                    made = fs.make_dirs(directory)
                except OSError as exc:
                    if self._may_skip(exc):
                        skipped.append(f"{directory} ({errno_text(exc.errno or 0)})")
                        self._drop(directory)
                        continue
                    raise OcirtError(f"create cgroup {directory}: "
                                     f"{errno_text(exc.errno or 0)}") from None
                self.made += made
                self._prepare(made)
        except BaseException:
            try:
                self.destroy()
            except OcirtError as exc:  # keep the first error; report the second
                log.warning(str(exc))
            raise
        if skipped:  # runc says nothing here; limits asked for fail in apply()
            log.debug(f"rootless: no cgroup in {', '.join(skipped)}")

    def _may_skip(self, exc: OSError) -> bool:
        return fs.may_skip(exc, rootless=self.rootless, explicit=self.explicit)

    def _would_skip(self, directory: str) -> bool:
        """A rootless container never uses a cgroup it may not write (someone else's of
        the same name, e.g. at the root of a v1 hierarchy): its processes are no concern."""
        return (self.rootless and not self.explicit and os.path.isdir(directory)
                and not os.access(directory, os.W_OK))

    def _check_unused(self) -> None:
        """runc 1.2's rule: never start a container in a cgroup that already has
        processes (they would be killed with it, or keep its cgroup alive)."""
        if self.allow_busy:
            return
        for directory in self.dirs():
            if self._would_skip(directory):
                continue
            found = fs.procs(directory)
            if found:
                raise OcirtError(f"container's cgroup is not empty: {len(found)} process(es) "
                                 f"found in {directory}")

    def add(self, pid: int, skip: tuple[str, ...] = ()) -> None:
        dirs = [d for d in self.dirs() if d not in skip]
        for directory in fs.join(dirs, pid, rootless=self.rootless, explicit=self.explicit):
            self._drop(directory)

    def birth(self) -> Birth | None:
        """Every directory, the cgroup2 one (the unified hierarchy of a hybrid host) by
        clone3 and the v1 ones by the process itself. Not rootless: a directory it may
        not write is skipped there, as add() does, and clone3 would fail on it."""
        return birth_from_state(self.state())  # as `exec` finds them later

    def apply(self, resources: dict[str, Any] | None) -> None:
        from ocirt.cgroups import resources as res_mod

        res = res_mod.parse(resources)
        self._set(res, res, devices=True)
        self.resources_raw = resources

    def update(self, resources: dict[str, Any]) -> None:
        """Apply a delta; device rules are never changed by an update (runc), so they are
        dropped from it with a warning rather than recorded as if applied."""
        from ocirt.cgroups import resources as res_mod

        if resources.get("devices") is not None:
            log.warning(f"{PREFIX}.devices: update does not change device rules (ignored)")
            resources = {k: v for k, v in resources.items() if k != "devices"}
        merged = res_mod.merge(self.resources_raw, resources)
        delta = res_mod.parse(resources)
        self._set(delta, res_mod.parse(merged), devices=False)
        self.resources_raw = merged

    def state(self) -> dict[str, Any] | None:
        """None when the container got no cgroup at all (rootless without access)."""
        if not self.dirs():
            return None
        data = {"manager": self.name, "made": self.made, "rootless": self.rootless,
                "explicit": self.explicit, "resources": self.resources_raw}
        data.update(self._extra_state())
        return data

    def planned_state(self) -> dict[str, Any] | None:
        """Every directory create() is about to make counts as made: destroy() removes
        those that exist (the leaf with what is below it, the parents only if empty) and
        never one that existed before, so a create killed at any instant leaves none."""
        made = list(self.made)
        for directory in self.dirs():
            if self._would_skip(directory):
                continue
            made += [d for d in fs.missing_dirs(directory) if d not in made]
        saved, self.made = self.made, made
        try:
            return self.state()
        finally:
            self.made = saved

    def pids(self) -> list[int]:
        for directory in self.dirs():
            if fs.exists(directory, "cgroup.procs"):
                return sorted(set(fs.procs(directory)))
        return []

    def destroy(self) -> None:
        leaves = set(self.dirs())
        errors = []
        for directory in reversed(self.made):
            if directory in leaves:
                try:
                    fs.remove_tree(directory)
                except OcirtError as exc:
                    errors.append(exc)
                    continue
            else:
                try:
                    os.rmdir(directory)
                except OSError:
                    continue  # not empty: another container's cgroup lives there too
            self.made.remove(directory)
        if errors:
            raise errors[0]

    # -- helpers for the setters ---------------------------------------------------------

    def _missing(self, field: str, controller: str) -> OcirtError:
        if self.rootless:
            return OcirtError(f"{PREFIX}.{field}: cannot set {controller} limit: container "
                              "could not join or create cgroup")
        return OcirtError(f"{PREFIX}.{field}: cannot set {controller} limit: the "
                          f"{controller} controller is not available on this host")
