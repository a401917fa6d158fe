"""LiveKit Agents' speech-to-text plugins against the cluster: a WAV file streamed through
Deepgram Flux (`deepgram.STTv2`), Deepgram live (`deepgram.STT`) and OpenAI Realtime
(`openai.STT(use_realtime=True)`), each pointed at the gateway, printing what each hears.

    pip install -r examples/requirements-livekit.txt
    python examples/livekit_stt.py --url http://HOST:8000 [--api-key KEY] [--plugin flux,live,openai] speech.wav

Each line printed is `PLUGIN EVENT TEXT` (EVENT: start, interim, final, end), for the test that
runs this script against `stt up` (tests/examples/test_examples.py) and for you.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from examples_common import addresses, arguments, read_wav


def make(plugin: str, url: str, key: str) -> Any:
    from livekit.plugins import deepgram, openai

    host, ws = addresses(url)
    if plugin == "flux":
        return deepgram.STTv2(model="flux-general-en", base_url=ws + "/v2/listen", api_key=key)
    if plugin == "live":
        return deepgram.STT(model="nova-3", base_url=host + "/v1/listen", api_key=key, interim_results=True)
    if plugin == "openai":
        return openai.STT(model="gpt-4o-transcribe", base_url=host + "/v1", api_key=key, use_realtime=True)
    raise SystemExit("unknown plugin %s (flux, live, openai)" % plugin)


async def run(plugin: str, url: str, key: str, pcm: bytes, rate: int) -> None:
    from livekit import rtc
    from livekit.agents import stt

    names = {
        stt.SpeechEventType.START_OF_SPEECH: "start",
        stt.SpeechEventType.INTERIM_TRANSCRIPT: "interim",
        stt.SpeechEventType.FINAL_TRANSCRIPT: "final",
        stt.SpeechEventType.END_OF_SPEECH: "end",
    }
    stream = make(plugin, url, key).stream()
    chunk = rate // 10 * 2  # 100 ms

    async def feed() -> None:
        for i in range(0, len(pcm), chunk):
            piece = pcm[i : i + chunk]
            stream.push_frame(rtc.AudioFrame(piece, rate, 1, len(piece) // 2))
            await asyncio.sleep(0.1)  # real time: the service paces a faster client
        # Trailing silence, so that the last turn ends on the service's own rules too.
        silence = b"\0" * chunk
        for _ in range(20):
            stream.push_frame(rtc.AudioFrame(silence, rate, 1, len(silence) // 2))
            await asyncio.sleep(0.1)
        stream.end_input()

    async def listen() -> None:
        async for event in stream:
            name = names.get(event.type)
            if name is not None:
                text = event.alternatives[0].text if event.alternatives else ""
                print(plugin, name, text, flush=True)

    feeder = asyncio.create_task(feed())
    listener = asyncio.create_task(listen())
    await feeder
    # The Deepgram plugins' streams end when the service closes them after the input's end;
    # OpenAI Realtime has no way to say "no more audio", so its stream is closed here once the
    # last final has had time to come.
    try:
        await asyncio.wait_for(asyncio.shield(listener), timeout=10)
    except TimeoutError:
        pass
    await stream.aclose()
    listener.cancel()
    await asyncio.gather(listener, return_exceptions=True)


async def main() -> int:
    args = arguments(__doc__, "plugin", "flux,live,openai")
    from livekit.agents import utils

    pcm, rate = read_wav(args.wav)
    # Outside a LiveKit job the plugins' HTTP session must be opened by hand.
    async with utils.http_context.open():
        for plugin in args.plugin.split(","):
            await asyncio.wait_for(run(plugin, args.url, args.api_key, pcm, rate), timeout=120)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
