"""The `stt` console command.

Each subcommand reads settings once and calls one entry function; `main` returns its exit code.
Nothing of the server is imported until a server command runs: the client commands work with
the client's light install (`pip install stt-cluster`, without the `server` extra).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from common.errors import ExitCode, SettingsError

if TYPE_CHECKING:
    from common.settings import SharedSettings

S = TypeVar("S", bound="SharedSettings")


def _server(what: str) -> None:
    """Exit 69 saying what to install when the server's packages are not (a client's install)."""
    import importlib.util

    missing = [m for m in ("redis", "fastapi", "faster_whisper") if importlib.util.find_spec(m) is None]
    if missing:
        print(
            "stt %s: the server is not installed here (no %s): pip install 'stt-cluster[server]'"
            % (what, ", ".join(missing)),
            file=sys.stderr,
        )
        raise SystemExit(ExitCode.UNAVAILABLE)


def _settings(cls: type[S]) -> S:
    """The settings of one process (each reads only its own), or exit 78 naming the bad one."""
    try:
        return cls.from_env()
    except SettingsError as exc:
        print("stt: bad setting: %s" % exc, file=sys.stderr)
        raise SystemExit(ExitCode.CONFIG) from None


def cmd_decoder(args: argparse.Namespace) -> int:
    _server("decoder")
    from common.settings import DecoderSettings
    from decoder.main import run

    return run(_settings(DecoderSettings))


def cmd_gateway(args: argparse.Namespace) -> int:
    _server("gateway")
    from common.settings import GatewaySettings
    from gateway.main import run

    return run(_settings(GatewaySettings))


def cmd_up(args: argparse.Namespace) -> int:
    _server("up")
    from common.settings import Settings
    from stt.supervisor import run

    return run(_settings(Settings))


def cmd_client(args: argparse.Namespace) -> int:
    from client.cli import run

    return run(args)


def cmd_transcribe(args: argparse.Namespace) -> int:
    from client.transcribe import run

    return run(args)


def cmd_usage(args: argparse.Namespace) -> int:
    from client.usage import run

    return run(args)


def cmd_bench(args: argparse.Namespace) -> int:
    from stt.bench import run

    return run(args)


def cmd_make_test_model(args: argparse.Namespace) -> int:
    _server("make-test-model")
    from decoder.testmodel import make_test_model

    logging.basicConfig(level=logging.INFO, format="stt make-test-model: %(message)s")
    try:
        out = make_test_model(args.dir, size=args.size, seed=args.seed)
    except (ValueError, FileExistsError) as exc:
        print("stt make-test-model: %s" % exc, file=sys.stderr)
        return ExitCode.USAGE
    print("wrote %s test model (seed %d) to %s; use it with MODEL_NAME=%s" % (args.size, args.seed, out, out))
    return ExitCode.OK


def cmd_settings(args: argparse.Namespace) -> int:
    _server("settings")
    from common.settings import describe, markdown_table

    if args.markdown:
        print(markdown_table(), end="")
        return ExitCode.OK
    for name, default, help_text in describe():
        print("%-28s %-22s %s" % (name, default, help_text))
    return ExitCode.OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stt", description="stt-cluster: real-time speech-to-text")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(fn=fn)
        return p

    add("up", cmd_up, "run the whole service on this machine (Redis, decoders, gateway)")
    add("gateway", cmd_gateway, "run one WebSocket gateway")
    add("decoder", cmd_decoder, "run one decoder process (one per GPU)")
    p = add("make-test-model", cmd_make_test_model, "write a random-weight Whisper model (offline)")
    p.add_argument("dir")
    p.add_argument("--size", default="micro", choices=("micro", "tiny", "base", "small", "medium", "large"))
    p.add_argument("--seed", type=int, default=0)
    p = add("settings", cmd_settings, "list every setting with its default")
    p.add_argument("--markdown", action="store_true", help="as the docs' Markdown tables (docs/settings.md)")
    from client.cli import add_arguments as client_args
    from client.transcribe import add_arguments as transcribe_args
    from client.usage import add_arguments as usage_args
    from stt.bench import add_arguments as bench_args

    client_args(add("client", cmd_client, "stream a WAV/FLAC file or stdin PCM and print transcripts"))
    transcribe_args(
        add("transcribe", cmd_transcribe, "transcribe whole files through the cluster (text, SRT, VTT, JSON)")
    )
    usage_args(add("usage", cmd_usage, "each tenant's usage per UTC day (a gateway's GET /v1/usage)"))
    bench_args(add("bench", cmd_bench, "load benchmark: latency and capacity at an SLO"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.fn(args))
