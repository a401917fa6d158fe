// Runs on the audio thread: turns the microphone's float samples into 16-bit PCM chunks of
// about 100 ms for the WebSocket, and reports the chunk's peak level for the meter.
class PcmWriter extends AudioWorkletProcessor {
  constructor() {
    super();
    this.size = Math.round(sampleRate / 10);
    this.buf = new Int16Array(this.size);
    this.n = 0;
    this.peak = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true;
    const frames = channels[0].length;
    for (let i = 0; i < frames; i++) {
      let v = 0;
      for (let c = 0; c < channels.length; c++) v += channels[c][i];
      v /= channels.length;
      v = Math.max(-1, Math.min(1, v));
      this.peak = Math.max(this.peak, Math.abs(v));
      this.buf[this.n++] = v < 0 ? v * 0x8000 : v * 0x7fff;
      if (this.n === this.size) {
        this.port.postMessage({ pcm: this.buf.buffer, peak: this.peak }, [this.buf.buffer]);
        this.buf = new Int16Array(this.size);
        this.n = 0;
        this.peak = 0;
      }
    }
    return true;
  }
}

registerProcessor("pcm-writer", PcmWriter);
