"""The site's one hook: tables made from the code (stt/docsgen.py) replace the
`<!-- generated: NAME -->` markers of the pages, at every build."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def on_page_markdown(markdown: str, **_: Any) -> str:
    from stt.docsgen import fill

    return fill(markdown)
