"""Pipecat's speech-to-text services against the cluster: a WAV file pushed through a pipeline
with Deepgram live (`DeepgramSTTService`), Deepgram Flux (`DeepgramFluxSTTService`) and OpenAI
Realtime (`OpenAIRealtimeSTTService`), each pointed at the gateway, printing what each hears.

    pip install -r examples/requirements-pipecat.txt
    python examples/pipecat_stt.py --url http://HOST:8000 [--api-key KEY] [--service live,flux,openai] speech.wav

Each line printed is `SERVICE EVENT TEXT` (EVENT: interim, final), for the test that runs this
script against `stt up` (tests/examples/test_examples.py) and for you.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from examples_common import addresses, arguments, read_wav


def make(service: str, url: str, key: str) -> Any:
    host, ws = addresses(url)
    if service == "live":
        from pipecat.services.deepgram.stt import DeepgramSTTService

        # The host only: the service adds /v1/listen (its LiveOptions carry no URL in 1.x).
        return DeepgramSTTService(api_key=key, base_url=host)
    if service == "flux":
        from pipecat.services.deepgram.flux.stt import DeepgramFluxSTTService

        return DeepgramFluxSTTService(api_key=key, url=ws + "/v2/listen")
    if service == "openai":
        from pipecat.services.openai.stt import OpenAIRealtimeSTTService

        # The whole WebSocket address. Its default turn_detection=False waits for a VAD in the
        # pipeline to say the user stopped; here the gateway's own endpointer ends the turns.
        return OpenAIRealtimeSTTService(
            api_key=key, base_url=ws + "/v1/realtime", turn_detection={"type": "server_vad"}
        )
    raise SystemExit("unknown service %s (live, flux, openai)" % service)


async def run(service: str, url: str, key: str, pcm: bytes, rate: int) -> None:
    from pipecat.frames.frames import EndFrame, Frame, InputAudioRawFrame, InterimTranscriptionFrame, TranscriptionFrame
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    from pipecat.workers.runner import WorkerRunner

    class Printer(FrameProcessor):  # type: ignore[misc]
        async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
            await super().process_frame(frame, direction)
            if isinstance(frame, InterimTranscriptionFrame):
                print(service, "interim", frame.text, flush=True)
            elif isinstance(frame, TranscriptionFrame):
                print(service, "final", frame.text, flush=True)
            await self.push_frame(frame, direction)

    worker = PipelineWorker(
        Pipeline([make(service, url, key), Printer()]),
        params=PipelineParams(audio_in_sample_rate=rate),
        idle_timeout_secs=None,
        enable_rtvi=False,
    )

    async def feed() -> None:
        chunk = rate // 10 * 2  # 100 ms, in real time
        audio = pcm + b"\0" * (rate * 2 * 2)  # and 2 s of silence: the last turn ends on the service's rules
        await asyncio.sleep(1.0)  # the service connects at the pipeline's start
        for i in range(0, len(audio), chunk):
            await worker.queue_frame(InputAudioRawFrame(audio=audio[i : i + chunk], sample_rate=rate, num_channels=1))
            await asyncio.sleep(0.1)
        await asyncio.sleep(3.0)  # the last final
        await worker.queue_frame(EndFrame())

    runner = WorkerRunner(handle_sigint=False)
    await asyncio.gather(runner.run(worker), feed())


async def main() -> int:
    args = arguments(__doc__, "service", "live,flux,openai")
    pcm, rate = read_wav(args.wav)
    for service in args.service.split(","):
        await asyncio.wait_for(run(service, args.url, args.api_key, pcm, rate), timeout=120)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
