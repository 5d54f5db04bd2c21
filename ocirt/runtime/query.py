"""`state` and `list`: read-only views of the store (no lock taken: state files are
replaced atomically, so a reader always sees a whole one)."""

from __future__ import annotations

import os

from ocirt.errors import ContainerNotExist
from ocirt.state import Store

TYPE_CHECKING = False  # typing costs ~2 ms to import; annotations only need it here
if TYPE_CHECKING:
    from typing import Any


def state(store: Store, cid: str) -> dict[str, Any]:
    return store.load(cid).oci_state()


def list_containers(store: Store) -> list[dict[str, Any]]:
    out = []
    for cid in store.ids():
        try:
            container = store.load(cid)
        except ContainerNotExist:
            continue  # deleted meanwhile
        entry = container.oci_state()
        entry["owner"] = _owner(container.dir)
        out.append(entry)
    return out


def _owner(path: str) -> str:
    try:
        uid = os.stat(path).st_uid
    except OSError:
        return ""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"#{uid}"


def table(rows: list[dict[str, Any]]) -> str:
    """runc's tabwriter layout: columns at least 12 wide, 3 spaces of padding."""
    header = ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    cells = [header] + [[str(r["id"]), str(r["pid"]), r["status"], r["bundle"], r["created"],
                         r["owner"]] for r in rows]
    widths = [max(12, max(len(row[i]) for row in cells) + 3) for i in range(len(header))]
    lines = []
    for row in cells:
        parts = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append("".join(parts) + row[-1])
    return "\n".join(lines) + "\n"
