"""The service simulated in one process for the accuracy benchmark: the gateway's own session
logic feeding the decoder's engine, every job decoded as soon as it is queued."""

from __future__ import annotations

import asyncio
from typing import Any

from benchmarks.evalset import Conversation, Session


def last_interims(sessions: list[Session]) -> list[Session]:
    """Each utterance's last interim as if it were its final: how good interims are."""
    out = []
    for sess in sessions:
        last: dict[int, dict[str, Any]] = {}
        for m in sess.interims:
            last[m["utterance"]] = m
        out.append(Session(finals=list(last.values())))
    return out


def simulate(convs: list[Conversation], model_name: str, env: dict[str, str]) -> list[Session]:
    """What the service would return with infinitely fast decoders, without the service: the
    gateway's own Session (endpointing, interims, prompts, context) feeds the decoder's engine in
    this process, every job decoded as soon as it is queued."""
    from common.audio import pcm16_to_float32
    from common.messages import Result
    from common.settings import Settings
    from decoder.engine import Engine
    from gateway.core.events import Event, Final, Interim
    from gateway.core.options import SessionOptions
    from gateway.core.session import Session as GatewaySession
    from gateway.metrics import GatewayMetrics
    from gateway.protocols.native import server_final, server_interim
    from gateway.store.jobqueue import MemoryQueue
    from gateway.transport.driver import NoRecords, SessionDriver

    settings = Settings.from_env({**env, "MODEL_NAME": model_name, "DECODE_BATCH": "1"})
    engine = Engine(settings)
    engine.load()

    async def one(conv: Conversation) -> Session:
        out = Session()
        queue = MemoryQueue()

        def send(event: Event) -> None:
            if isinstance(event, Final):
                out.finals.append(server_final(event, False))
            elif isinstance(event, Interim):
                out.interims.append(server_interim(event))

        core = GatewaySession(settings, SessionOptions(sample_rate=16000, lang="en"), "sim", GatewayMetrics())
        session = SessionDriver(core, queue, NoRecords(), send)

        async def drain() -> None:
            while queue.jobs:
                job = queue.jobs.pop(0)
                if job.id in queue.cancelled:
                    continue  # a speculative final whose speaker went on: a decoder drops it too
                audio, context = queue.audio_of(job)
                o = engine.decode_one(job, pcm16_to_float32(audio), pcm16_to_float32(context) if context else None)
                out.decode_ms.setdefault(job.kind, []).append(o.decode_ms)
                session.on_result(
                    Result.answering(job, text=o.text, language=o.language, audio_s=o.audio_s, no_speech=o.no_speech)
                )

        pcm = conv.speech.pcm16
        for i in range(0, len(pcm), 3200):
            await session.feed(pcm[i : i + 3200])
            await drain()
            await session.tick()
        await session.finalize()
        await drain()
        return out

    return [asyncio.run(one(conv)) for conv in convs]
