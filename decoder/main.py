"""`stt decoder`: read settings, load the model, consume jobs until SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading

from common.errors import DeviceMemoryError, ExitCode, ModelLoadError
from common.logs import setup_logging
from common.settings import DecoderSettings
from decoder.devices import DeviceError
from decoder.engine import Engine
from decoder.metrics import DecoderMetrics
from decoder.turnmodel import TurnModel
from decoder.turns import load_turn_model
from decoder.worker import DecoderWorker

logger = logging.getLogger(__name__)
stopping = threading.Event()  # set by a signal that came before the event loop ran


async def serve(settings: DecoderSettings, engine: Engine, turn_model: TurnModel | None = None) -> None:
    metrics = DecoderMetrics()
    if settings.METRICS_PORT:
        metrics.serve(settings.METRICS_PORT, settings.redis_url, host=settings.METRICS_HOST)
    metrics.info.labels(settings.decoder_id, engine.model_name, engine.device, engine.compute_type).set(1)
    worker = DecoderWorker(settings, engine, metrics, turn_model)
    metrics.not_ready = worker.not_ready
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop.request)
    if stopping.is_set():
        worker.stop.request()
    try:
        await worker.run()
    finally:
        metrics.close()
    if worker.breaker.tripped:
        raise DeviceFailed(worker.breaker.tripped)
    if worker.failed:
        raise DecoderFailed(worker.failed)


class DecoderFailed(Exception):
    """A task the decoder needs died (logged where it happened)."""


class DeviceFailed(DecoderFailed):
    """The device failed job after job (decoder/breaker.py): a fresh process gets a fresh
    CUDA context."""


def run(settings: DecoderSettings) -> int:
    setup_logging(settings.LOG_LEVEL, process_name="decoder")
    # A stop asked for while the model loads (the loop does not run yet) is remembered; the
    # decoder then stops at once, exit 0, with no traceback.
    previous = {sig: signal.signal(sig, lambda *_: stopping.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        engine = Engine(settings)
        engine.load()
    except DeviceMemoryError as exc:
        # Not hopeless for the service: the decoders that fit serve; stt up does not restart
        # this one (the same card fills the same way).
        logger.error("%s", exc)
        return ExitCode.NO_DEVICE_MEMORY
    except (ModelLoadError, DeviceError) as exc:
        # Hopeless: the same settings on the same machine fail the same way (stt up and compose
        # do not restart an exit 69 forever).
        logger.error("%s", exc)
        return ExitCode.UNAVAILABLE
    except Exception as exc:  # anything else while building the engine is just as hopeless
        logger.error("cannot start the decoder: %s: %s", type(exc).__name__, exc)
        return ExitCode.UNAVAILABLE
    turn_model = load_turn_model(settings)
    try:
        asyncio.run(serve(settings, engine, turn_model))
    except DeviceFailed as exc:
        logger.error("decoder %s exits to be restarted: %s", settings.decoder_id, exc)
        return ExitCode.DEVICE_FAILED
    except DecoderFailed as exc:
        logger.error("decoder %s exits: %s", settings.decoder_id, exc)
        return ExitCode.SOFTWARE
    except Exception:
        logger.exception("decoder %s crashed", settings.decoder_id)
        return ExitCode.SOFTWARE
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return ExitCode.OK
