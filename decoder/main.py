"""`stt decoder`: read settings, load the model, consume jobs until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

from common.errors import ExitCode, ModelLoadError
from common.logs import setup_logging
from common.settings import Settings
from decoder.engine import Engine
from decoder.metrics import DecoderMetrics
from decoder.worker import DecoderWorker

logger = logging.getLogger(__name__)


async def serve(settings: Settings, engine: Engine) -> None:
    metrics = DecoderMetrics()
    if settings.METRICS_PORT:
        metrics.serve(settings.METRICS_PORT, settings.redis_url, host=settings.METRICS_HOST)
    metrics.info.labels(settings.decoder_id, engine.model_name, engine.device, engine.compute_type).set(1)
    worker = DecoderWorker(settings, engine, metrics)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop.request)
    try:
        await worker.run()
    finally:
        metrics.close()


def run(settings: Settings) -> int:
    setup_logging(settings.LOG_LEVEL, process_name="decoder")
    engine = Engine(settings)
    try:
        engine.load()
    except ModelLoadError as exc:
        logger.error("%s", exc)
        return ExitCode.UNAVAILABLE
    try:
        asyncio.run(serve(settings, engine))
    except Exception:
        logger.exception("decoder %s crashed", settings.decoder_id)
        return ExitCode.SOFTWARE
    return ExitCode.OK
