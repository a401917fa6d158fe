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


def _comments(cls: type) -> dict[str, str]:
    """Each field's comment in the class's source: the lines above it, or the one after it."""
    out: dict[str, str] = {}
    above: list[str] = []
    for line in inspect.getsource(cls).splitlines()[1:]:
        text = line.strip()
        if text.startswith("#"):
            above.append(text.lstrip("# "))
            continue
        field = re.match(r"(\w+): [^=#]+(?:=[^#]*)?(?:#\s*(.*))?$", text)
        if field and not text.startswith(("def ", "@", "return")):
            note = " ".join(above) or (field.group(2) or "")
            out[field.group(1)] = note
        above = []
    return out


def schema(cls: type) -> str:
    """A dataclass's fields as a table: name, type, default, and its source comment."""
    notes = _comments(cls)
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
    comments = _module_comments(keys)
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


def _module_comments(module: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    above: list[str] = []
    for line in inspect.getsource(module).splitlines():
        text = line.strip()
        if text.startswith("#"):
            above.append(text.lstrip("# "))
            continue
        assign = re.match(r"([A-Z_]+) = [^#]*(?:#\s*(.*))?$", text)
        if assign:
            out[assign.group(1)] = assign.group(2) or " ".join(above)
        above = []
    return out


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
