"""Platform vs raw faster-whisper on the same files, in one process, alternating rounds.

Raw: the model loaded once, files transcribed one after another (decoding included).
Platform: one batch materialized through raw_audio -> validated_audio -> transcripts -> diary_notes
and their checks (hashing, content-addressed copies, sandboxed decode to normalised WAV with
measurements, model load, guards, transcript files, notes, Parquet tables, Dagster events in an
existing SQLite instance). Both use the same transcription settings.

    python benchmarks/throughput.py [--set speech] [--rounds 3]
"""

import argparse

from common import corpus, dagster_instance, median, platform_transcribe, raw_transcribe

from diary_platform.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="speech", help="folder of ../shared/eval (speech or real)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    references = corpus(args.set)
    files = [r.path for r in references]
    config = Settings().transcriber
    print(f"{len(files)} files from {args.set}; model {config.model}, {config.compute_type}, beam {config.beam_size}, "
          f"vad {config.vad_filter}, cpu_threads {config.cpu_threads or 'default'}")
    raw_speeds, platform_speeds = [], []
    with dagster_instance() as instance:
        for round_index in range(1, args.rounds + 1):
            _, platform_wall, audio_seconds = platform_transcribe(files, instance)
            _, raw_wall = raw_transcribe(files, config)
            raw_speeds.append(audio_seconds / raw_wall)
            platform_speeds.append(audio_seconds / platform_wall)
            print(f"round {round_index}: audio {audio_seconds:.1f} s | raw {raw_wall:.2f} s ({raw_speeds[-1]:.2f}x) | "
                  f"platform {platform_wall:.2f} s ({platform_speeds[-1]:.2f}x) | "
                  f"ratio {platform_speeds[-1] / raw_speeds[-1]:.3f}")
    raw, platform = median(raw_speeds), median(platform_speeds)
    print(f"median speed (audio s per wall s): raw {raw:.2f}x, platform {platform:.2f}x, "
          f"platform/raw {platform / raw:.3f} (target >= 0.9)")


if __name__ == "__main__":
    main()
