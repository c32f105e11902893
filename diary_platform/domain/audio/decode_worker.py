"""The decode sandbox's child process: one JSON request per line in, one JSON answer per line out.

Runs under the resource limits its parent sets (sandbox.py). Nothing but answers goes to the real
stdout: whatever a library prints lands on stderr.

    python -m diary_platform.domain.audio.decode_worker
"""

import errno
import json
import os
import resource
import sys
from dataclasses import asdict
from pathlib import Path

from diary_platform.domain.audio.decode import AudioRejected, decode_to_wav
from diary_platform.domain.audio.measurements import LevelMeter, assess, speech_spans


def handle(request: dict) -> dict:
    source, target = Path(request["source"]), Path(request["target"])
    meter = LevelMeter()
    try:
        info = decode_to_wav(source, target, max_seconds=request["max_seconds"], on_pcm=meter.feed)
    except AudioRejected as rejected:
        return {"ok": False, "reason": rejected.reason, "message": rejected.message}
    except OSError as error:
        if error.errno == errno.EFBIG:
            limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
            return {"ok": False, "reason": "too_long", "message": f"The decoded audio grew past {limit / 1e6:.0f} MB and was stopped."}
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            return {"ok": False, "fault": f"no space left on {target.parent}"}
        raise
    measurements = assess(meter, *speech_spans(target), info.source_sample_rate, info.partial)
    return {"ok": True, "info": asdict(info), "partial": info.partial, "measurements": asdict(measurements)}


def main() -> None:
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            answer = handle(json.loads(line))
        except MemoryError:
            answer = {"ok": False, "reason": "too_much_memory", "message": "Decoding needed more memory than allowed."}
        answers.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
