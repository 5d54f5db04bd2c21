"""An undo stack: every step of a multi-step operation registers how to take it back, so
a failure at any point leaves nothing behind (no process, mount, cgroup, fd or state)."""

from __future__ import annotations

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any



class Undo:
    def __init__(self) -> None:
        self._steps: list[tuple[Callable[..., Any], tuple[Any, ...], str]] = []

    def push(self, fn: Callable[..., Any], *args: Any, what: str = "") -> None:
        self._steps.append((fn, args, what or getattr(fn, "__name__", "step")))

    def run(self) -> None:
        """Take back every step, newest first; a failing step is logged, not raised, so
        the older steps still run."""
        from ocirt import log

        while self._steps:
            fn, args, what = self._steps.pop()
            try:
                fn(*args)
            except Exception as exc:  # cleanup must go on
                log.warning(f"cleanup ({what}) failed: {exc}")

    def clear(self) -> None:
        self._steps.clear()
