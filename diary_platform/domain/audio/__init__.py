"""Audio: untrusted uploads decoded once, in a sandbox, into the 16 kHz mono PCM Whisper reads.

- decode.py: the container and codec allowlists, `decode_to_wav` (streamed, duration enforced on samples),
  `read_wav`, `AudioRejected` (a reason code and a message for people).
- sandbox.py: `SandboxPool` / `DecodeSandbox`: worker processes under memory, size and time limits.
- decode_worker.py: the worker's process (`python -m diary_platform.domain.audio.decode_worker`).
- measurements.py: levels, clipping, silence, speech ratio (Silero VAD), SNR and a quality score.
"""
