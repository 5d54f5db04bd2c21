"""JSON without the cost of `import json`.

`import json` pulls in `re` and costs about 6 ms, which every `ocirt state`, `kill` and
`delete` would pay (CRI-O calls `state` constantly). The C accelerator `_json` that the
standard library itself uses does the real work; this module drives it directly and
falls back to the `json` module on interpreters without it.
"""

from __future__ import annotations

TYPE_CHECKING = False  # importing typing costs ~2 ms; only annotations need it
if TYPE_CHECKING:
    from typing import Any


try:
    import _json

    class _ScanContext:
        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int
        memo: dict = {}

        @staticmethod
        def parse_constant(name: str) -> float:
            return float(name.replace("Infinity", "inf"))

    _scan = _json.make_scanner(_ScanContext())
    _encode_str = _json.encode_basestring
    _encode_compact = _json.make_encoder(
        None, None, _json.encode_basestring, None, ":", ",", False, False, True
    )
except (ImportError, AttributeError):  # pragma: no cover - non-CPython
    _json = None

_WHITESPACE = " \t\n\r"


class JSONError(ValueError):
    """Invalid JSON; `line` and `column` are 1-based."""

    def __init__(self, msg: str, text: str, pos: int) -> None:
        line = text.count("\n", 0, pos) + 1
        column = pos - (text.rfind("\n", 0, pos) + 1) + 1
        super().__init__(f"{msg} at line {line} column {column}")
        self.line, self.column = line, column


# Input from users and images is checked against these before anything uses it: no
# runtime-spec document nests deeper than 8 levels, and the deepest JSON inside a SIF
# (OCI manifests, DSSE envelopes) about as deep; the C scanner itself would raise
# RecursionError near 1000.
MAX_DEPTH = 64


def loads(text: str | bytes) -> Any:
    """Parse one JSON document; raises JSONError (a ValueError) with line and column."""
    if isinstance(text, bytes | bytearray):
        if text[:3] == b"\xef\xbb\xbf":  # a BOM; "utf-8-sig" would cost a module import
            text = text[3:]
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            good = bytes(text[:exc.start]).decode("utf-8-sig", "replace")
            raise JSONError("invalid UTF-8", good, len(good)) from None
    if _json is None:  # pragma: no cover
        import json

        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise JSONError(exc.msg, text, exc.pos) from None
    pos = _skip_ws(text, 0)
    try:
        obj, end = _scan(text, pos)
    except StopIteration as stop:
        where = stop.value if isinstance(stop.value, int) else pos
        msg = "unexpected end of input" if where >= len(text) else "invalid value"
        raise JSONError(msg, text, where) from None
    except RecursionError:
        raise JSONError("nested too deeply", text, pos) from None
    except (ValueError, SystemError):
        # The C scanner builds its error through json.decoder; before that module is
        # imported it fails with a bare SystemError. Errors are rare: let the json module
        # parse again and say what is wrong where.
        import json

        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise JSONError(exc.msg, text, exc.pos) from None
        except RecursionError:
            raise JSONError("nested too deeply", text, pos) from None
        except ValueError:  # an integer of more than sys.get_int_max_str_digits() digits
            raise JSONError("a number with too many digits", text, pos) from None
        raise JSONError("invalid JSON", text, pos) from None
    end = _skip_ws(text, end)
    if end != len(text):
        raise JSONError("extra data after the JSON value", text, end)
    return obj


class JSONContentError(ValueError):
    """Parsed JSON that ocirt must not use: `path` leads to the offending value (keys and
    list indexes, for `path_text`), `problem` says what is wrong with it."""

    def __init__(self, path: list[str | int], problem: str) -> None:
        super().__init__(f"{path_text(path)}: {problem}")
        self.path, self.problem = path, problem

    @property
    def path_text(self) -> str:
        return path_text(self.path)


def check_tree(obj: Any, max_depth: int = MAX_DEPTH, allow_nul: bool = False) -> None:
    """Refuse what no kernel interface and no consumer of ours can take: nesting deeper
    than `max_depth`, and strings (values or keys) holding a NUL byte (the kernel cuts
    paths, argv and env there) or a lone surrogate (a `\\ud800` escape, which no UTF-8
    encoding exists for). Raises JSONContentError naming the first offending value.
    `allow_nul` lets NUL bytes through, for strings that are only stored and shown."""
    problem = _check_value(obj, max_depth, max_depth, allow_nul)
    if problem is not None:
        path, text = problem
        path.reverse()
        raise JSONContentError(path, text)


def _check_value(obj: Any, depth: int, limit: int,
                 allow_nul: bool) -> tuple[list[str | int], str] | None:
    if isinstance(obj, str):
        return _check_string(obj, allow_nul)
    if isinstance(obj, dict):
        items: Any = obj.items()
    elif isinstance(obj, list):
        items = enumerate(obj)
    else:
        return None
    if depth <= 0:
        return [], f"nested more than {limit} levels deep"
    for key, value in items:
        if isinstance(key, str):
            problem = _check_string(key, allow_nul)
            if problem is not None:
                return [key], f"key {problem[1]}"
        problem = _check_value(value, depth - 1, limit, allow_nul)
        if problem is not None:
            problem[0].append(key)
            return problem
    return None


def _check_string(s: str, allow_nul: bool = False) -> tuple[list[str | int], str] | None:
    if "\0" in s and not allow_nul:
        return [], "contains a NUL byte"
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError as exc:
            return [], f"contains a lone surrogate ({s[exc.start]!r}), which is not Unicode"
    return None


def path_text(parts: Any) -> str:
    """`mounts[2].destination`; keys that are not plain words are quoted:
    `annotations["io.kubernetes.cri-o.TTY"]`."""
    out: list[str] = []
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif part and part.replace("_", "a").isalnum() and part.isascii():
            out.append(f".{part}" if out else part)
        else:
            out.append(f"[{_quoted(part)}]")
    return "".join(out)


def _quoted(s: str) -> str:
    """A key as JSON; all-ASCII escapes when it cannot be encoded (a lone surrogate)."""
    if _check_string(s, allow_nul=True) is None:
        return dumps(s)
    if _json is None:  # pragma: no cover
        import json

        return json.dumps(s)
    return _json.encode_basestring_ascii(s)


def _skip_ws(text: str, pos: int) -> int:
    n = len(text)
    while pos < n and text[pos] in _WHITESPACE:
        pos += 1
    return pos


def dumps(obj: Any) -> str:
    """Compact JSON (no spaces), as runc writes its JSON logs and `list -f json`."""
    if _json is None:  # pragma: no cover
        import json

        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    return "".join(_encode_compact(obj, 0))


def dumps_pretty(obj: Any, indent: str = "  ") -> str:
    """Indented JSON in the layout of Go's json.MarshalIndent (what runc prints)."""
    out: list[str] = []
    _pretty(obj, indent, 0, out)
    return "".join(out)


def _pretty(obj: Any, indent: str, level: int, out: list[str]) -> None:
    if isinstance(obj, dict):
        if not obj:
            out.append("{}")
            return
        pad = "\n" + indent * (level + 1)
        out.append("{")
        for i, (key, value) in enumerate(obj.items()):
            out.append(("," if i else "") + pad + _string(str(key)) + ": ")
            _pretty(value, indent, level + 1, out)
        out.append("\n" + indent * level + "}")
    elif isinstance(obj, list | tuple):
        if not obj:
            out.append("[]")
            return
        pad = "\n" + indent * (level + 1)
        out.append("[")
        for i, value in enumerate(obj):
            out.append(("," if i else "") + pad)
            _pretty(value, indent, level + 1, out)
        out.append("\n" + indent * level + "]")
    elif isinstance(obj, str):
        out.append(_string(obj))
    else:
        out.append(dumps(obj))


def _string(s: str) -> str:
    if _json is None:  # pragma: no cover
        return dumps(s)
    return _encode_str(s)
