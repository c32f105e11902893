"""The platform against plain faster-whisper on the same files, in one process, alternating rounds.

Modes, side by side, each scored for speed (audio seconds per wall second) and WER per set:
- raw beam 5: the model loaded once, each file transcribed in turn with faster-whisper's VAD (decoding
  included), beam 5; the way open-source transcription servers do it, and the baseline of the ratios.
- raw batched: the same with faster-whisper's batched pipeline per file (batch 8, greedy).
- platform: one batch materialized through raw_audio -> validated_audio -> transcripts -> diary_notes
  and their checks (hashing, content-addressed copies, sandboxed decode to normalised WAV with
  measurements and VAD, guards, transcript files, notes, Parquet tables, Dagster events in an existing
  SQLite instance), as configured; `--packing` adds the platform with other packings.
Model loading is start-up and is left out of every mode (the platform keeps its model warm).

    python benchmarks/throughput.py [--sets speech real] [--rounds 3] [--packing shared per_file]
"""

import argparse
from dataclasses import replace

from common import corpus, dagster_instance, median, platform_transcribe, raw_model, raw_transcribe

from diary_platform.evaluation import word_error_rate
from diary_platform.settings import Settings

TARGET = 1.8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=["speech", "real"], help="folders of ../shared/eval")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--packing", nargs="*", default=[], help="platform packings to add beside the configured one")
    args = parser.parse_args()

    sets = {name: corpus(name) for name in args.sets}
    references = [r for refs in sets.values() for r in refs]
    files = [r.path for r in references]
    config = Settings().transcriber
    beam5 = replace(config, beam_size=5, batched=False, vad_filter=True)
    greedy = replace(beam5, beam_size=1)
    model = raw_model(beam5)
    print(f"{len(files)} files from {', '.join(args.sets)}; model {config.model}, {config.compute_type}, "
          f"cpu_threads {config.cpu_threads or 'default'}; platform: packing {config.packing}, beam {config.beam_size}, "
          f"batch {config.batch_size}")
    modes = {
        "raw beam 5": lambda instance: raw_transcribe(files, beam5, model),
        "raw batched": lambda instance: raw_transcribe(files, greedy, model, batch_size=8),
        "platform": lambda instance: platform_transcribe(files, instance, warm=True)[:2],
    }
    for packing in args.packing:
        modes[f"platform {packing}"] = lambda instance, p=packing: platform_transcribe(files, instance, warm=True, packing=p)[:2]
    audio_seconds = sum(_seconds(path) for path in files)
    speeds: dict[str, list[float]] = {mode: [] for mode in modes}
    texts: dict[str, list[str]] = {}
    with dagster_instance() as instance:
        platform_transcribe(files[:1], instance, warm=True)  # loads the platform's model: start-up, not timed
        for round_index in range(1, args.rounds + 1):
            line = []
            for mode, run in modes.items():
                texts[mode], wall = run(instance)
                speeds[mode].append(audio_seconds / wall)
                line.append(f"{mode} {speeds[mode][-1]:.2f}x")
            print(f"round {round_index}: " + " | ".join(line), flush=True)
    baseline = median(speeds["raw beam 5"])
    print(f"\n{'mode':22} {'speed':>8} {'vs beam 5':>10} " + " ".join(f"{'WER ' + name:>12}" for name in sets))
    for mode in modes:
        wers, start = [], 0
        for refs in sets.values():
            wers.append(word_error_rate([r.text for r in refs], texts[mode][start : start + len(refs)]))
            start += len(refs)
        speed = median(speeds[mode])
        print(f"{mode:22} {speed:>7.2f}x {speed / baseline:>10.2f} " + " ".join(f"{w:>12.3f}" for w in wers))
    print(f"audio {audio_seconds:.1f} s; median of {args.rounds} rounds; WER with the Whisper English normaliser; "
          f"target: platform >= {TARGET}x raw beam 5 at a WER no worse on every set")


def _seconds(path) -> float:
    from faster_whisper import decode_audio

    return len(decode_audio(str(path))) / 16_000


if __name__ == "__main__":
    main()
