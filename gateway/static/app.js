// The live transcription page: the microphone (or a chosen file) streamed as 16-bit PCM over
// the gateway's WebSocket (/v1/listen), interims and finals shown as they come. No build step,
// nothing loaded from another origin.
"use strict";

const $ = (id) => document.getElementById(id);

const LANGUAGES = [
  ["en", "English"], ["auto", "Detect automatically"], ["de", "German"], ["es", "Spanish"],
  ["fr", "French"], ["it", "Italian"], ["ja", "Japanese"], ["nl", "Dutch"], ["pt", "Portuguese"],
  ["zh", "Chinese"],
];

// What a close code means to a person (DESIGN.md, client protocol).
const CLOSE_WORDS = {
  1000: "The session ended.",
  1001: "The server is going away. Start again to reconnect.",
  1006: "The connection to the server was lost. Check that it is running and start again.",
  1008: "The server closed the session: it broke a usage rule (sending too fast, or not reading).",
  1009: "The server closed the session: a message was too large.",
  1011: "The server had an internal error. Start again.",
  1012: "The server is restarting. Start again to reconnect.",
  1013: "The service is busy right now (no free decoder or too many sessions). Try again in a moment.",
  4400: "The server did not understand the request.",
  4401: "The API key was not accepted.",
};

const ERROR_WORDS = {
  too_fast: "Audio was arriving faster than real time.",
  idle_timeout: "No audio arrived for too long, so the session was closed.",
  session_too_long: "The session reached its maximum length.",
  overloaded: "The service is busy right now. Try again in a moment.",
  final_failed: "One sentence could not be transcribed.",
  unauthorized: "The API key was not accepted.",
  unknown_language: "The server does not know this language.",
  start_timeout: "The session did not start in time.",
  internal: "The server had an internal error.",
};

let ws = null;          // the session (a Live), across its connections
let audio = null;       // {ctx, media, node, sink} while the microphone is on
let fileRun = null;     // {cancelled} while a file is being sent
let stopping = false;
const finals = new Map();   // utterance -> {start, end, text}
const rows = new Map();     // utterance -> <li>

function setState(state, words) {
  const el = $("state");
  el.dataset.state = state;
  el.textContent = words;
  const busy = state === "connecting" || state === "live" || state === "finishing" || state === "reconnecting";
  $("start").disabled = busy;
  $("file").disabled = busy;
  $("stop").disabled = !(state === "live");
  $("lang").disabled = busy;
  $("key").disabled = busy;
}

function showError(words) {
  const el = $("error");
  el.textContent = words;
  el.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function clock(seconds) {
  const s = Math.max(0, seconds);
  const m = Math.floor(s / 60);
  return `${m}:${(s - m * 60).toFixed(1).padStart(4, "0")}`;
}

function row(utterance) {
  let li = rows.get(utterance);
  if (!li) {
    li = document.createElement("li");
    li.dataset.utterance = String(utterance);
    const span = document.createElement("span");
    span.className = "span";
    const text = document.createElement("span");
    text.className = "text";
    li.append(span, text);
    const next = [...rows.keys()].filter((u) => u > utterance).sort((a, b) => a - b)[0];
    $("transcript").insertBefore(li, next === undefined ? null : rows.get(next));
    rows.set(utterance, li);
  }
  return li;
}

function showInterim(m) {
  if (finals.has(m.utterance)) return;
  const li = row(m.utterance);
  li.className = "interim";
  li.querySelector(".span").textContent = `${clock(m.start)} – … (listening)`;
  const stable = document.createElement("span");
  stable.className = "stable";
  stable.textContent = m.text.slice(0, m.stable_chars);
  const rest = document.createElement("span");
  rest.className = "unstable";
  rest.textContent = m.text.slice(m.stable_chars);
  li.querySelector(".text").replaceChildren(stable, rest);
}

function showFinal(m) {
  const text = (m.text || "").trim();
  // With "Who spoke", each sentence says its speaker (numbered from 1 for people).
  const who = m.speaker === undefined ? "" : `Speaker ${m.speaker + 1}: `;
  finals.set(m.utterance, { start: m.start, end: m.end, text: text && who + text });
  const li = row(m.utterance);
  if (!text) {
    li.remove();
    rows.delete(m.utterance);
  } else {
    li.className = "final";
    li.querySelector(".span").textContent = `${clock(m.start)} – ${clock(m.end)}`;
    li.querySelector(".text").textContent = who + text;
  }
  const any = [...finals.values()].some((f) => f.text);
  for (const id of ["copy", "download-txt", "download-srt"]) $(id).disabled = !any;
}

function onMessage(m) {
  if (m.type === "interim") showInterim(m);
  else if (m.type === "final") showFinal(m);
  else if (m.type === "error") {
    if (m.utterance !== undefined) {
      const li = row(m.utterance);
      li.className = "failed";
      li.querySelector(".text").textContent = ERROR_WORDS[m.code] || m.message;
    }
    showError(`${ERROR_WORDS[m.code] || "The server reported a problem."} (${m.message})`);
  } else if (m.type === "done") setState("idle", "Finished");
}

function releaseAudio() {
  if (audio) {
    audio.media.getTracks().forEach((t) => t.stop());
    audio.ctx.close();
    audio = null;
  }
  if (fileRun) fileRun.cancelled = true;
  fileRun = null;
  $("level").value = 0;
}

async function keyAccepted() {
  // /status asks for the key where the server has keys: a 401 there means this one is wrong.
  if ($("key-field").hidden) return true;
  const key = $("key").value.trim();
  const r = await fetch("/status?token=" + encodeURIComponent(key));
  return r.status !== 401;
}

// Close codes after which the session is resumed on a new connection: the gateway died or the
// network dropped (no close frame), it is going away or restarting (a drain).
const RESUMABLE = new Set([1001, 1005, 1006, 1012]);
const BUFFER_S = 30;       // audio kept to send again after a resume
const RESUME_FOR_MS = 60000;

// One session, across as many connections as it takes: a broken connection is reconnected with
// backoff and the session resumed (README "Resuming a session"); the messages it missed come
// again (each shown once), and the audio the gateway does not hold is sent again.
class Live {
  constructor(sampleRate) {
    this.sampleRate = sampleRate;
    this.sock = null;
    this.sessionId = "";
    this.token = "";
    this.lastSeq = -1;
    this.sent = [];          // [offset in bytes, ArrayBuffer] of the last BUFFER_S seconds
    this.sentBytes = 0;
    this.stopped = false;
    this.done = false;
    this.resumes = 0;
  }

  url() {
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const key = $("key").value.trim();
    return `${proto}://${location.host}/v1/listen` + (key ? `?token=${encodeURIComponent(key)}` : "");
  }

  get open() {
    return this.sock !== null && this.sock.readyState === WebSocket.OPEN;
  }

  start() {
    return new Promise((resolve, reject) => {
      this.onStarted = resolve;
      this.onFailed = reject;
      const start = { op: "start", sample_rate: this.sampleRate, lang: $("lang").value, interim: true };
      if ($("speakers").checked) start.diarize = true;
      this.connect(start);
    });
  }

  connect(first) {
    const sock = new WebSocket(this.url());
    sock.binaryType = "arraybuffer";
    this.sock = sock;
    sock.onopen = () => sock.send(JSON.stringify(first));
    sock.onmessage = (ev) => this.receive(JSON.parse(ev.data));
    sock.onclose = (ev) => this.closed(sock, ev);
  }

  receive(m) {
    if (typeof m.seq === "number") {
      if (m.seq <= this.lastSeq) return;  // replayed, and shown before the break
      this.lastSeq = m.seq;
    }
    if (m.type === "started") {
      this.sessionId = m.session_id;
      this.token = m.resume_token || "";
      if (this.onStarted) this.onStarted(this);
      this.onStarted = null;
    } else if (m.type === "resumed") {
      this.resumes += 1;
      this.resumeBy = 0;
      this.nextDelay = 0;
      this.resending(m.audio_received_ms);
      setState(this.stopped ? "finishing" : "live", this.stopped ? "Finishing the last sentence…" : "Listening");
      return;
    } else if (m.type === "reconnect") {
      return;  // its close follows: the session is resumed on another gateway
    }
    if (m.type === "done") this.done = true;
    onMessage(m);
  }

  resending(receivedMs) {
    const from = Math.floor((receivedMs * this.sampleRate) / 1000) * 2;
    for (const [offset, buf] of this.sent) {
      if (offset + buf.byteLength > from) this.sock.send(buf.slice(Math.max(0, from - offset)));
    }
    if (this.stopped) this.sock.send(JSON.stringify({ op: "stop" }));
  }

  send(buf) {
    this.sent.push([this.sentBytes, buf]);
    this.sentBytes += buf.byteLength;
    const keep = BUFFER_S * this.sampleRate * 2;
    while (this.sent.length && this.sent[0][0] + this.sent[0][1].byteLength < this.sentBytes - keep) this.sent.shift();
    if (this.open) this.sock.send(buf);  // else it is sent again once the session is resumed
  }

  stop() {
    this.stopped = true;
    if (this.open) this.sock.send(JSON.stringify({ op: "stop" }));
  }

  closed(sock, ev) {
    if (sock !== this.sock) return;
    if (!this.done && this.token && (RESUMABLE.has(ev.code) || ev.code === 4409)) {
      setState("reconnecting", "Reconnecting…");
      if (!this.resumeBy) this.resumeBy = Date.now() + RESUME_FOR_MS;
      this.resume(this.resumeBy, this.nextDelay || 100);
      return;
    }
    if (ws === this) ws = null;
    releaseAudio();
    if (ev.code !== 1000) {
      showError(CLOSE_WORDS[ev.code] || `The connection closed (code ${ev.code}${ev.reason ? ": " + ev.reason : ""}).`);
      setState("error", "Disconnected");
    } else if ($("state").dataset.state !== "idle") setState("idle", "Finished");
    if (this.onFailed && !this.sessionId) this.onFailed(new Error("closed before the session started"));
  }

  resume(deadline, delay) {
    if (Date.now() > deadline) {
      this.token = "";
      this.closed(this.sock, { code: 1006, reason: "the session could not be resumed" });
      return;
    }
    setTimeout(() => {
      this.connect({ op: "resume", session_id: this.sessionId, resume_token: this.token, last_seq: this.lastSeq });
      // A refused resume (its old connection not yet known dead: 4409) closes; closed() tries again.
    }, delay);
    this.nextDelay = Math.min(2000, delay * 2);
  }
}

async function openSession(sampleRate) {
  const live = new Live(sampleRate);
  return live.start();
}

async function begin() {
  clearError();
  setState("connecting", "Connecting…");
  stopping = false;
  if (!(await keyAccepted())) {
    showError(CLOSE_WORDS[4401] + " Check it and start again.");
    setState("error", "Not connected");
    return false;
  }
  return true;
}

async function startMicrophone() {
  if (!(await begin())) return;
  let media;
  try {
    media = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
  } catch (e) {
    showError(`The microphone could not be opened (${e.name}). Allow this page to use it and try again.`);
    setState("error", "Not connected");
    return;
  }
  const ctx = new AudioContext();
  await ctx.audioWorklet.addModule("/static/pcm-worklet.js");
  const node = new AudioWorkletNode(ctx, "pcm-writer");
  const sink = ctx.createGain();
  sink.gain.value = 0;  // the graph must reach the speakers to run; nothing is heard
  audio = { ctx, media, node, sink };
  try {
    ws = await openSession(ctx.sampleRate);
  } catch {
    return;  // onclose said why
  }
  node.port.onmessage = (ev) => {
    $("level").value = ev.data.peak;
    if (ws && !stopping) ws.send(ev.data.pcm);
  };
  ctx.createMediaStreamSource(media).connect(node);
  node.connect(sink).connect(ctx.destination);
  setState("live", "Listening");
}

function stop() {
  stopping = true;
  releaseAudio();
  if (ws) {
    ws.stop();
    setState("finishing", "Finishing the last sentence…");
  }
}

async function sendFile(file) {
  if (!file || !(await begin())) return;
  let buffer;
  const ctx = new AudioContext();
  try {
    buffer = await ctx.decodeAudioData(await file.arrayBuffer());
  } catch {
    showError(`"${file.name}" could not be read as audio. Choose a WAV, FLAC, MP3, OGG or WebM file.`);
    setState("error", "Not connected");
    return;
  } finally {
    ctx.close();
  }
  const mono = new Float32Array(buffer.length);
  for (let c = 0; c < buffer.numberOfChannels; c++) {
    const data = buffer.getChannelData(c);
    for (let i = 0; i < mono.length; i++) mono[i] += data[i] / buffer.numberOfChannels;
  }
  try {
    ws = await openSession(buffer.sampleRate);
  } catch {
    return;
  }
  const run = { cancelled: false };
  fileRun = run;
  setState("live", `Sending ${file.name}`);
  // Sent at the pace it plays, as a microphone would, so interims come as they would live.
  const step = Math.round(buffer.sampleRate / 10);
  const t0 = performance.now();
  for (let i = 0; i < mono.length && !run.cancelled; i += step) {
    const chunk = mono.subarray(i, i + step);
    const pcm = new Int16Array(chunk.length);
    let peak = 0;
    for (let j = 0; j < chunk.length; j++) {
      const v = Math.max(-1, Math.min(1, chunk[j]));
      peak = Math.max(peak, Math.abs(v));
      pcm[j] = v < 0 ? v * 0x8000 : v * 0x7fff;
    }
    const due = t0 + ((i + chunk.length) / buffer.sampleRate) * 1000;
    await new Promise((r) => setTimeout(r, Math.max(0, due - performance.now())));
    if (!ws || run.cancelled) return;
    $("level").value = peak;
    ws.send(pcm.buffer);
  }
  if (!run.cancelled) stop();
}

function finalsInOrder() {
  return [...finals.entries()].sort((a, b) => a[0] - b[0]).map(([, f]) => f).filter((f) => f.text);
}

function srtTime(seconds) {
  const ms = Math.round(Math.max(0, seconds) * 1000);
  const pad = (n, w) => String(n).padStart(w, "0");
  return `${pad(Math.floor(ms / 3600000), 2)}:${pad(Math.floor(ms / 60000) % 60, 2)}:${pad(Math.floor(ms / 1000) % 60, 2)},${pad(ms % 1000, 3)}`;
}

function download(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

async function loadInfo() {
  for (const [code, name] of LANGUAGES) $("lang").add(new Option(name, code));
  try {
    const r = await fetch("/status");
    if (r.status === 401) {
      $("key-field").hidden = false;
      $("model").textContent = "This server asks for an API key.";
    } else if (r.ok) {
      const s = await r.json();
      const d = (s.decoders || [])[0];
      $("model").textContent = d ? `Model ${d.model} on ${d.device}` : "No decoder is running yet.";
    }
  } catch {
    $("model").textContent = "The server does not answer.";
  }
}

$("start").addEventListener("click", startMicrophone);
$("stop").addEventListener("click", stop);
$("file").addEventListener("change", (ev) => {
  const file = ev.target.files[0];
  ev.target.value = "";
  sendFile(file);
});
$("copy").addEventListener("click", async () => {
  await navigator.clipboard.writeText(finalsInOrder().map((f) => f.text).join("\n"));
  $("copy").textContent = "Copied";
  setTimeout(() => ($("copy").textContent = "Copy"), 1500);
});
$("download-txt").addEventListener("click", () =>
  download("transcript.txt", finalsInOrder().map((f) => f.text).join("\n") + "\n", "text/plain"));
$("download-srt").addEventListener("click", () =>
  download(
    "transcript.srt",
    finalsInOrder().map((f, i) => `${i + 1}\n${srtTime(f.start)} --> ${srtTime(f.end)}\n${f.text}\n`).join("\n"),
    "application/x-subrip",
  ));
setState("idle", "Not connected");
loadInfo();
