"""`stt usage`: each tenant's usage per UTC day, from a gateway's `GET /v1/usage`, as a table."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import urllib.parse
from typing import Any

from common.errors import ExitCode

COLUMNS = ("tenant", "day", "audio_seconds", "sessions", "files", "finals")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default="http://127.0.0.1:8000", help="a gateway (default http://127.0.0.1:8000)")
    p.add_argument("--api-key", default=os.environ.get("STT_API_KEY", ""), help="API key (or STT_API_KEY)")
    p.add_argument("--from", dest="start", help="first UTC day, YYYY-MM-DD (default today)")
    p.add_argument("--to", dest="end", help="last UTC day, YYYY-MM-DD (default: --from, or today)")
    p.add_argument("--json", action="store_true", help="the gateway's JSON as it is")


def table(rows: list[dict[str, Any]]) -> str:
    cells = [list(COLUMNS)] + [
        [r["tenant"], r["day"], "%.1f" % r["audio_seconds"], str(r["sessions"]), str(r["files"]), str(r["finals"])]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in cells
    ]
    total = sum(r["audio_seconds"] for r in rows)
    return "\n".join([*lines, "", "%d rows, %.1f audio hours" % (len(rows), total / 3600)])


def run(args: argparse.Namespace) -> int:
    url = urllib.parse.urlsplit(args.url)
    query = urllib.parse.urlencode({k: v for k, v in (("from", args.start), ("to", args.end)) if v})
    headers = {"Authorization": "Bearer %s" % args.api_key} if args.api_key else {}
    try:
        conn = http.client.HTTPConnection(url.hostname or "localhost", url.port, timeout=30)
        conn.request("GET", url.path.rstrip("/") + "/v1/usage" + ("?" + query if query else ""), headers=headers)
        response = conn.getresponse()
        body = json.loads(response.read() or b"{}")
        conn.close()
    except (OSError, ValueError) as exc:
        print("stt usage: cannot read %s: %s" % (args.url, exc), file=sys.stderr)
        return ExitCode.UNAVAILABLE
    if response.status != 200:
        error = body.get("error", {})
        print("stt usage: %d %s" % (response.status, error.get("message", error)), file=sys.stderr)
        return ExitCode.FAILURE
    if args.json:
        print(json.dumps(body, indent=1))
    else:
        print("usage %s to %s (UTC days)" % (body["from"], body["to"]))
        print(table(body["usage"]))
    return ExitCode.OK
