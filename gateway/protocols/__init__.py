"""The wire protocols a client may speak, each an adapter over the same session core:
`native` (this service's own, /v1/listen and /ws), `openai` (the Realtime API in transcription
mode, /v1/realtime) and `deepgram` (Deepgram's live /v1/listen)."""
