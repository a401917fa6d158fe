"""`stt client FILE|-`: stream a WAV/FLAC file (or raw PCM16 from stdin) and print transcripts.

On a terminal the live interim is redrawn on one line and each final replaces it; otherwise
only finals are printed, one per line. `--json` prints every server message as one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any, TextIO

from client.audiofile import read_file, read_stdin
from client.stream import ClientError, connect
from common.audio import MODEL_RATE
from common.errors import AudioError, ExitCode


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="WAV or FLAC file (any rate and channels), or - for raw PCM16 on stdin")
    p.add_argument("--url", default="ws://127.0.0.1:8000/v1/listen", help="gateway WebSocket URL")
    p.add_argument("--rate", type=int, default=16000, help="sample rate of raw PCM on stdin (default 16000)")
    p.add_argument("--speed", type=float, default=1.0, help="send at this multiple of real time (0: at once)")
    p.add_argument("--lang", default="en", help="language code, or auto")
    p.add_argument("--no-interim", action="store_true", help="ask for finals only")
    p.add_argument("--word-timestamps", action="store_true")
    p.add_argument("--task", default="transcribe", choices=("transcribe", "translate"))
    p.add_argument("--prompt", default="")
    p.add_argument("--speakers", action="store_true", help="label who spoke each sentence (diarize)")
    p.add_argument("--api-key", default="", help="sent as a Bearer token")
    p.add_argument("--json", action="store_true", help="print every server message as one JSON line")


class Printer:
    def __init__(self, out: TextIO, as_json: bool) -> None:
        self.out, self.as_json = out, as_json
        self.live = out.isatty() and not as_json
        self.interim_shown = False

    def __call__(self, msg: dict[str, Any]) -> None:
        kind = msg["type"]
        if self.as_json:
            self.out.write(json.dumps(msg, ensure_ascii=False) + "\n")
        elif kind == "interim" and self.live:
            room = max(10, shutil.get_terminal_size().columns - 3)  # the line's tail, so it never wraps
            self.out.write("\r\x1b[K… " + msg["text"].strip()[-room:])
            self.interim_shown = True
        elif kind == "final":
            self._clear()
            who = "speaker %d: " % msg["speaker"] if "speaker" in msg else ""
            self.out.write("[%7.2f - %7.2f] %s%s\n" % (msg["start"], msg["end"], who, msg["text"].strip()))
        elif kind == "error":
            self._clear()
            print("error %s: %s" % (msg["code"], msg["message"]), file=sys.stderr)
        self.out.flush()

    def _clear(self) -> None:
        if self.interim_shown:
            self.out.write("\r\x1b[K")
            self.interim_shown = False


async def _stdin_chunks(rate: int) -> AsyncIterator[bytes]:
    chunks = read_stdin(rate * 2 // 10)
    while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
        yield chunk


async def stream_source(args: argparse.Namespace, show: Callable[[dict[str, Any]], None]) -> None:
    pcm, rate = (b"", args.rate) if args.source == "-" else (read_file(args.source), MODEL_RATE)
    async with connect(
        args.url,
        sample_rate=rate,
        lang=args.lang,
        interim=not args.no_interim,
        word_timestamps=args.word_timestamps,
        task=args.task,
        prompt=args.prompt,
        api_key=args.api_key,
        diarize=args.speakers,
    ) as stream:
        show(stream.messages[0])
        sending = (
            stream.send_chunks(_stdin_chunks(rate), args.speed)
            if args.source == "-"
            else stream.send_audio(pcm, speed=args.speed)
        )
        async for msg in stream.receive_while(sending):
            show(msg)
        show(stream.messages[-1])


def run(args: argparse.Namespace) -> int:
    show = Printer(sys.stdout, args.json)
    try:
        asyncio.run(stream_source(args, show))
    except AudioError as exc:
        print("stt client: %s" % exc, file=sys.stderr)
        return ExitCode.USAGE
    except ClientError as exc:
        print("stt client: %s" % exc, file=sys.stderr)
        return ExitCode.UNAVAILABLE if exc.close_code is None and not exc.code else ExitCode.FAILURE
    except KeyboardInterrupt:
        return ExitCode.FAILURE
    return ExitCode.OK
