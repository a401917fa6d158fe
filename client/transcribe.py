"""`stt transcribe FILE...`: whole files through the cluster's `POST /v1/audio/transcriptions`.

The upload streams from disk; a progress line shows the bytes sent, then the file's parts done
(the gateway's /status, looked up by the request id this client sends)."""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common.errors import ExitCode

EXTENSIONS = {
    "text": "txt",
    "json": "json",
    "verbose_json": "json",
    "diarized_json": "json",
    "srt": "srt",
    "vtt": "vtt",
}
CHUNK = 256 * 1024


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", help="audio files (any format the server's FFmpeg reads)")
    p.add_argument("--url", default="http://localhost:8000", help="the gateway (or nginx) base URL")
    p.add_argument("--format", default="text", choices=tuple(EXTENSIONS), help="what to print or write")
    p.add_argument("--language", default="", help="a Whisper language code (default: the server's choice)")
    p.add_argument("--prompt", default="", help="text that comes before the file (names, spelling)")
    p.add_argument("--words", action="store_true", help="word timestamps (with --format verbose_json)")
    p.add_argument("--speakers", action="store_true", help="label who spoke (text: a line per turn, 'A: ...')")
    p.add_argument("--output-dir", default="", help="write FILE's transcript to DIR/<name>.<ext> instead of stdout")
    p.add_argument("--api-key", default=os.environ.get("STT_API_KEY", ""), help="API key (or STT_API_KEY)")


class Progress:
    """One line on stderr, redrawn in place on a terminal, a line per phase otherwise."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tty = sys.stderr.isatty()
        self.last = ""
        self.phase = ""

    def show(self, text: str) -> None:
        line = "%s: %s" % (self.name, text)
        phase = text.split()[0]
        if self.tty and line != self.last:
            sys.stderr.write("\r\033[K" + line)
        elif not self.tty and phase != self.phase:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()
        self.last, self.phase = line, phase

    def done(self, text: str) -> None:
        self.show(text)
        if self.tty:
            sys.stderr.write("\n")


def bar(done: float, total: float, width: int = 24) -> str:
    frac = 0.0 if total <= 0 else min(1.0, done / total)
    return "[%s%s] %3d%%" % ("#" * int(frac * width), "-" * (width - int(frac * width)), frac * 100)


def _fields(args: argparse.Namespace) -> list[tuple[str, str]]:
    by_turn = args.speakers and args.format == "text"
    model = "gpt-4o-transcribe-diarize" if args.speakers else "whisper-1"
    fields = [("model", model), ("response_format", "diarized_json" if by_turn else args.format)]
    if args.language:
        fields.append(("language", args.language))
    if args.prompt:
        fields.append(("prompt", args.prompt))
    if args.words:
        fields.append(("timestamp_granularities[]", "word"))
    return fields


def transcribe_file(path: Path, args: argparse.Namespace) -> str:
    """The transcript of one file in `args.format`; raises OSError or RuntimeError (the server's
    message) on failure."""
    url = urllib.parse.urlsplit(args.url)
    boundary = uuid.uuid4().hex
    request_id = uuid.uuid4().hex
    head = b"".join(
        b'--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n%s\r\n' % (boundary.encode(), k.encode(), v.encode())
        for k, v in _fields(args)
    )
    head += b'--%s\r\nContent-Disposition: form-data; name="file"; filename="%s"\r\n' % (
        boundary.encode(),
        path.name.replace('"', "_").encode(),
    )
    head += b"Content-Type: application/octet-stream\r\n\r\n"
    tail = b"\r\n--%s--\r\n" % boundary.encode()
    size = path.stat().st_size
    progress = Progress(path.name)
    sent = [0]

    def body() -> Iterator[bytes]:
        yield head
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                sent[0] += len(chunk)
                progress.show("uploading %s %.1f/%.1f MB" % (bar(sent[0], size), sent[0] / 1e6, size / 1e6))
                yield chunk
        yield tail

    headers = {
        "Content-Type": "multipart/form-data; boundary=%s" % boundary,
        "Content-Length": str(len(head) + size + len(tail)),
        "X-Request-Id": request_id,
    }
    if args.api_key:
        headers["Authorization"] = "Bearer %s" % args.api_key
    conn_cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(url.hostname or "localhost", url.port, timeout=3600)
    finished = threading.Event()
    watcher = threading.Thread(target=_watch, args=(args, request_id, progress, finished, sent, size), daemon=True)
    started = time.monotonic()
    try:
        conn.request("POST", url.path.rstrip("/") + "/v1/audio/transcriptions", body=body(), headers=headers)
        watcher.start()
        response = conn.getresponse()
        data = response.read().decode("utf-8", "replace")
    finally:
        finished.set()
        conn.close()
    if response.status != 200:
        try:
            message = json.loads(data)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = data.strip()[:200]
        raise RuntimeError("HTTP %d: %s" % (response.status, message))
    progress.done("done in %.1f s" % (time.monotonic() - started))
    return turns(data) if args.speakers and args.format == "text" else data


def turns(diarized: str) -> str:
    """A diarized_json answer as text: one line per turn, its speaker first."""
    lines: list[list[str]] = []
    for seg in json.loads(diarized)["segments"]:
        who = seg.get("speaker") or "?"
        if lines and lines[-1][0] == who:
            lines[-1].append(seg["text"].strip())
        else:
            lines.append([who, seg["text"].strip()])
    return "".join("%s: %s\n" % (line[0], " ".join(line[1:])) for line in lines)


def _watch(
    args: argparse.Namespace, request_id: str, progress: Progress, finished: threading.Event, sent: list[int], size: int
) -> None:
    """While the server works: its parts done, from /status."""
    url = urllib.parse.urlsplit(args.url)
    while not finished.wait(0.5):
        if sent[0] < size:
            continue
        try:
            conn = http.client.HTTPConnection(url.hostname or "localhost", url.port, timeout=5)
            headers = {"Authorization": "Bearer %s" % args.api_key} if args.api_key else {}
            conn.request("GET", url.path.rstrip("/") + "/status", headers=headers)
            status: dict[str, Any] = json.loads(conn.getresponse().read())
            conn.close()
        except (OSError, ValueError):
            continue
        mine = next((f for f in status.get("files", []) if f.get("id") == "file-" + request_id), None)
        if mine is None:
            progress.show("decoding the file ...")
        elif not finished.is_set():
            progress.show(
                "transcribing %s %d/%d parts" % (bar(mine["done"], mine["parts"]), mine["done"], mine["parts"])
            )


def run(args: argparse.Namespace) -> int:
    status = ExitCode.OK
    for name in args.files:
        path = Path(name)
        try:
            text = transcribe_file(path, args)
        except (OSError, RuntimeError) as exc:
            print("\nstt transcribe: %s: %s" % (name, exc), file=sys.stderr)
            status = ExitCode.FAILURE
            continue
        if args.output_dir:
            out = Path(args.output_dir) / ("%s.%s" % (path.stem, EXTENSIONS[args.format]))
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text)
            print("stt transcribe: wrote %s" % out, file=sys.stderr)
        else:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return status
