"""The page at `/`, in a real headless Chromium (Debian's, driven by Playwright): its fake
microphone plays real speech, and the page must show the spoken words."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from stt.speech import SENTENCES, Speech, conversation
from stt.wer import wer
from tests.conftest import JFK, JFK_TEXT, REAL_MODEL, ROOT
from tests.gateway.conftest import Gateway, Pair
from tests.gateway.test_speakers import conversation_wav
from tests.proxy import Proxy

CHROMIUM = os.environ.get("STT_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("STT_TEST_ARTIFACTS", ROOT / "test-artifacts"))
REAL = {"MODEL_NAME": REAL_MODEL}
KEY = "page-key-0123456789"

pytestmark = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and shutil.which("espeak-ng")),
    reason="needs Debian's chromium (apt-get install chromium) and espeak-ng",
)

# Every change of the transcript, with the time it happened: interims and finals per utterance.
RECORD_EVENTS = """
window.__events = [];
new MutationObserver(() => {
  for (const li of document.querySelectorAll('#transcript li')) {
    const last = window.__events.filter(e => e.u === li.dataset.utterance).pop();
    const e = {u: li.dataset.utterance, kind: li.className, text: li.querySelector('.text').textContent};
    if (!last || last.kind !== e.kind || last.text !== e.text) window.__events.push({...e, t: performance.now()});
  }
}).observe(document.documentElement, {subtree: true, childList: true, characterData: true});
"""


def artifact(name: str) -> Path:
    """Where a test leaves a file for people to look at (test-artifacts/, or STT_TEST_ARTIFACTS)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name


@pytest.fixture(scope="module")
def mic_speech(tmp_path_factory: pytest.TempPathFactory) -> tuple[Speech, Path]:
    speech = conversation(list(SENTENCES[:3]), pause_s=1.2, lead_s=1.0, tail_s=2.0)
    path = tmp_path_factory.mktemp("page") / "mic.wav"
    sf.write(path, (speech.audio * 32767).astype(np.int16), 16000, subtype="PCM_16")
    return speech, path


async def browser_page(pw: Any, url: str, wav: Path | None = None, **context: Any) -> Any:
    args = ["--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
    if wav is not None:
        args.append("--use-file-for-fake-audio-capture=%s%%noloop" % wav)
    browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
    ctx = await browser.new_context(**context)
    page = await ctx.new_page()
    page.on("console", lambda m: print("console:", m.type, m.text))
    await page.add_init_script(RECORD_EVENTS)
    await page.goto(url)
    return page


@pytest.fixture
async def pw() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        yield p


async def finals_shown(page: Any) -> list[str]:
    texts: list[str] = await page.eval_on_selector_all(
        "#transcript li.final .text", "els => els.map(e => e.textContent)"
    )
    return texts


async def wait_finals(page: Any, n: int, timeout_s: float) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = await finals_shown(page)
        if len(got) >= n:
            return got
        await page.wait_for_timeout(100)
    raise AssertionError("the page showed %s finals after %.0f s, not %d" % (await finals_shown(page), timeout_s, n))


@pytest.mark.parametrize("gateway", [REAL], indirect=True)
async def test_the_microphone_is_transcribed_live(gateway: Gateway, pw: Any, mic_speech: tuple[Speech, Path]) -> None:
    speech, wav = mic_speech
    page = await browser_page(pw, gateway.http + "/", wav)
    # The page asks /status for the model once it has loaded: wait for the answer.
    await page.wait_for_function("document.querySelector('#model').textContent.includes('tiny.en')", timeout=15_000)
    assert await page.is_hidden("#key-field"), "this server needs no key"
    await page.click("#start")
    await page.wait_for_selector("#state[data-state=live]", timeout=15_000)
    await page.wait_for_function("document.getElementById('level').value > 0.05", timeout=15_000)
    await wait_finals(page, 1, 30)
    await page.wait_for_selector("#transcript li.interim", timeout=15_000)
    await page.screenshot(path=str(artifact("page-mid-session.png")), full_page=True)
    got = await wait_finals(page, len(speech.texts), 40)
    await page.click("#stop")
    await page.wait_for_selector("#state[data-state=idle]", timeout=20_000)
    assert await page.inner_text("#state") == "Finished"
    assert await page.is_hidden("#error"), await page.inner_text("#error")
    assert wer(speech.text, " ".join(got)) <= 0.3, got
    spans = await page.eval_on_selector_all("#transcript li.final .span", "els => els.map(e => e.textContent)")
    assert all("–" in s and "listening" not in s for s in spans), spans
    events = await page.evaluate("window.__events")
    for u in {e["u"] for e in events if e["kind"] == "final"}:
        kinds = [e["kind"] for e in events if e["u"] == u]
        assert kinds.index("interim") < kinds.index("final"), (u, kinds)


@pytest.mark.parametrize("gateway", [REAL], indirect=True)
async def test_a_chosen_file_is_transcribed_and_the_finals_copied_and_downloaded(
    gateway: Gateway, pw: Any, tmp_path: Path
) -> None:
    page = await browser_page(
        pw, gateway.http + "/", permissions=["clipboard-read", "clipboard-write"], accept_downloads=True
    )
    await page.set_input_files("#file", str(JFK))
    got = await wait_finals(page, 2, 40)
    await page.wait_for_selector("#state[data-state=idle]", timeout=30_000)
    assert wer(JFK_TEXT, " ".join(got)) <= 0.15, got
    await page.click("#copy")
    copied = await page.evaluate("navigator.clipboard.readText()")
    assert copied.split("\n") == got
    async with page.expect_download() as info:
        await page.click("#download-srt")
    srt = await asyncio.to_thread(Path(await (await info.value).path()).read_text)
    blocks = srt.strip().split("\n\n")
    assert len(blocks) == len(got)
    first = blocks[0].split("\n")
    assert first[0] == "1" and first[1].startswith("00:00:0") and " --> " in first[1] and first[2] == got[0]


@pytest.mark.parametrize("gateway", [{"API_KEY": KEY}], indirect=True)
async def test_a_wrong_api_key_is_explained(gateway: Gateway, pw: Any, mic_speech: tuple[Speech, Path]) -> None:
    page = await browser_page(pw, gateway.http + "/", mic_speech[1])
    await page.wait_for_selector("#key-field:not([hidden])")
    await page.fill("#key", "not-the-key")
    await page.click("#start")
    await page.wait_for_selector("#error:not([hidden])", timeout=10_000)
    assert "API key was not accepted" in await page.inner_text("#error")
    assert await page.get_attribute("#state", "data-state") == "error"
    await page.fill("#key", KEY)
    await page.click("#start")
    await page.wait_for_selector("#state[data-state=live]", timeout=15_000)
    await page.click("#stop")
    await page.wait_for_selector("#state[data-state=idle]", timeout=20_000)


async def test_the_page_fits_a_phone_and_loads_nothing_from_elsewhere(gateway: Gateway, pw: Any) -> None:
    requested: list[str] = []
    page = await browser_page(pw, gateway.http + "/", viewport={"width": 375, "height": 740}, is_mobile=True)
    page.on("request", lambda r: requested.append(r.url))
    await page.reload()
    await page.wait_for_load_state("networkidle")
    assert all(u.startswith(gateway.http) for u in requested), requested
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, "no sideways scrolling on a phone"
    for sel in ("#start", "#stop", "#lang", "#download-srt"):
        box = await page.locator(sel).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375, (sel, box)
    await page.screenshot(path=str(artifact("page-phone.png")), full_page=True)
    script = await page.evaluate("fetch('/static/app.js').then(r => r.text())")
    assert "AudioWorkletNode" in script and "ScriptProcessor" not in script


@pytest.mark.slow
async def test_the_page_resumes_its_session_when_its_gateway_dies(
    pair: Pair, proxy: Proxy, pw: Any, mic_speech: tuple[Speech, Path]
) -> None:
    """The page's gateway is SIGKILLed mid-session: the page reconnects (through the proxy, to
    the other gateway), resumes, sends again the audio that was lost, and every sentence is shown
    once."""
    speech, wav = mic_speech
    http = proxy.url.replace("ws://", "http://").removesuffix("/v1/listen")
    page = await browser_page(pw, http + "/", wav)
    await page.click("#start")
    await page.wait_for_selector("#state[data-state=live]", timeout=15_000)
    await wait_finals(page, 1, 30)
    pair.kill(pair.ports[0])
    await page.wait_for_selector("#state[data-state=live]", timeout=30_000)  # back after "reconnecting"
    got = await wait_finals(page, len(speech.texts), 40)
    await page.click("#stop")
    await page.wait_for_selector("#state[data-state=idle]", timeout=30_000)
    assert await page.is_hidden("#error"), await page.inner_text("#error")
    assert len(got) == len(speech.texts) and wer(speech.text, " ".join(got)) <= 0.3, got
    assert pair.ports[1] in proxy.routed


@pytest.mark.parametrize("gateway", [REAL], indirect=True)
async def test_with_who_spoke_ticked_each_sentence_names_its_speaker(gateway: Gateway, pw: Any, tmp_path: Path) -> None:
    wav = conversation_wav(tmp_path)
    page = await browser_page(pw, gateway.http + "/", wav)
    await page.wait_for_function("document.querySelector('#model').textContent.includes('tiny.en')", timeout=15_000)
    await page.check("#speakers")
    await page.click("#start")
    got = await wait_finals(page, 4, 60)
    await page.click("#stop")
    assert [t.split(":")[0] for t in got[:4]] == ["Speaker 1", "Speaker 2", "Speaker 1", "Speaker 2"], got
