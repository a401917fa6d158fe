"""Tables of the documentation site made from the code, so that they cannot drift from it: every
setting (one table per process), every Redis name, the job and result schema. The site's hook
(docs/hooks.py) puts each where a page says `<!-- generated: NAME -->`."""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable
from typing import Any

_PLACEHOLDER = re.compile(r"%[sd]")


def settings() -> str:
    from common.settings import markdown_table

    return markdown_table()


# A dataclass field and a module constant, each with the comment that may trail it.
_FIELD = re.compile(r"(\w+): [^=#]+(?:=[^#]*)?(?:#\s*(.*))?$")
_CONSTANT = re.compile(r"([A-Z_]+) = [^#]*(?:#\s*(.*))?$")


def _comments(source: Any, line: re.Pattern[str]) -> dict[str, str]:
    """Each name `line` matches in `source`'s code, with its comment: the one trailing it, else the
    lines above it."""
    out: dict[str, str] = {}
    above: list[str] = []
    for raw in inspect.getsource(source).splitlines():
        text = raw.strip()
        if text.startswith("#"):
            above.append(text.lstrip("# "))
            continue
        found = line.match(text)
        if found:
            out[found.group(1)] = found.group(2) or " ".join(above)
        above = []
    return out


def schema(cls: type) -> str:
    """A dataclass's fields as a table: name, type, default, and its source comment."""
    notes = _comments(cls, _FIELD)
    rows = ["| field | type | default | meaning |", "| --- | --- | --- | --- |"]
    for f in dataclasses.fields(cls):
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        kind = kind.replace(" | ", " or ")  # a pipe would end the table's cell
        if f.default is not dataclasses.MISSING:
            default = "`%r`" % (f.default.value if hasattr(f.default, "value") else f.default)
        else:
            default = "required"
        rows.append("| `%s` | `%s` | %s | %s |" % (f.name, kind, default, notes.get(f.name, "").replace("|", "\\|")))
    return "\n".join(rows) + "\n"


def _key_pattern(fn: Callable[..., str]) -> str | None:
    """The Redis name a keys.py function builds, its arguments as {name}."""
    found = re.search(r'"(stt:[^"]*)"', inspect.getsource(fn))
    if found is None:
        return None
    params = iter("{%s}" % p for p in inspect.signature(fn).parameters)
    return _PLACEHOLDER.sub(lambda _: next(params), found.group(1))


def redis_names() -> str:
    """Every Redis name in common/keys.py: the constants, then the names its functions build."""
    from common import keys

    rows = ["| name | in the code | what |", "| --- | --- | --- |"]
    comments = _comments(keys, _CONSTANT)
    for name, value in vars(keys).items():
        if name.isupper() and isinstance(value, str) and value.startswith("stt:"):
            rows.append("| `%s` | `%s` | %s |" % (value, name, comments.get(name, "")))
    for name, fn in inspect.getmembers(keys, inspect.isfunction):
        if fn.__module__ != keys.__name__:
            continue
        pattern = _key_pattern(fn)
        if pattern is not None:
            doc = " ".join((fn.__doc__ or "").split())
            rows.append("| `%s` | `%s()` | %s |" % (pattern, name, doc.replace("|", "\\|")))
    return "\n".join(rows) + "\n"


def job_schema() -> str:
    from common.messages import Job

    return schema(Job)


def result_schema() -> str:
    from common.messages import Result

    return schema(Result)


GENERATED: dict[str, Callable[[], str]] = {
    "settings": settings,
    "redis": redis_names,
    "job": job_schema,
    "result": result_schema,
}


def fill(markdown: str) -> str:
    """`markdown` with each `<!-- generated: NAME -->` replaced by that table (KeyError: no such
    table)."""
    return re.sub(r"<!-- generated: (\w+) -->", lambda m: GENERATED[m.group(1)](), markdown)
