# The seed's quick-start client (../shared/seed/README.md, "4) Simple test"), kept verbatim:
# tests/stt/test_up.py runs it against `stt up`. Do not edit it to suit the service.
import asyncio, websockets, json, base64, soundfile as sf

async def main():
    uri = "ws://localhost:8000/ws"
    async with websockets.connect(uri, max_size=2**23) as ws:
        await ws.send(json.dumps({"op":"start","sample_rate":16000,"lang":"en"}))
        # send a short wav file (mono 16k PCM16)
        audio, sr = sf.read("sample.wav", dtype='int16')
        assert sr==16000
        chunk = 16000//2  # 0.5s
        for i in range(0, len(audio), chunk):
            buf = audio[i:i+chunk].tobytes()
            await ws.send(json.dumps({"op":"audio","payload": base64.b64encode(buf).decode()}))
            await asyncio.sleep(0.05)
        await ws.send(json.dumps({"op":"stop"}))
        try:
            while True:
                msg = await asyncio.wait_for(ws.recv(), timeout=3)
                print(msg)
        except asyncio.TimeoutError:
            pass

asyncio.run(main())
