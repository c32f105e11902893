"""Word error rate of the platform's transcripts against the manifests, beside the raw model's.

Both are scored two ways: the Whisper English normaliser, and the naive one the corpus README quotes
(lower case, punctuation stripped). Targets: the platform no worse than raw on each set.

    python benchmarks/wer.py [--sets speech real]
"""

import argparse
import re

import jiwer
from common import corpus, dagster_instance, platform_transcribe, raw_transcribe

from diary_platform.evaluation import word_error_rate
from diary_platform.settings import Settings


def naive_wer(references: list[str], hypotheses: list[str]) -> float:
    def normalise(text: str) -> str:
        return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())

    return jiwer.wer([normalise(r) for r in references], [normalise(h) for h in hypotheses])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=["speech", "real"])
    args = parser.parse_args()
    config = Settings().transcriber
    print(f"{'set':8} {'files':>5} {'raw/whisper':>12} {'platform/whisper':>17} {'raw/naive':>10} {'platform/naive':>15}")
    for name in args.sets:
        references = corpus(name)
        files = [r.path for r in references]
        texts = [r.text for r in references]
        with dagster_instance() as instance:
            platform, _, _ = platform_transcribe(files, instance)
        raw, _ = raw_transcribe(files, config)
        print(f"{name:8} {len(files):>5} {word_error_rate(texts, raw):>12.3f} {word_error_rate(texts, platform):>17.3f} "
              f"{naive_wer(texts, raw):>10.3f} {naive_wer(texts, platform):>15.3f}")


if __name__ == "__main__":
    main()
