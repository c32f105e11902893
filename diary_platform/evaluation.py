"""Word error rate the way Whisper is scored: jiwer over text run through Whisper's English normaliser.

Used by the `model_evaluation` asset, the tests and the benchmarks.
"""

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Reference:
    path: Path
    text: str
    facts: tuple[str, ...] = ()


def read_manifest(manifest: Path) -> list[Reference]:
    references = []
    for line in manifest.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            references.append(
                Reference((manifest.parent / entry["file"]).resolve(), entry["text"], tuple(entry.get("facts", ())))
            )
    return references


def word_error_rate(references: list[str], hypotheses: list[str]) -> float:
    """Corpus WER (errors over all reference words), normalised."""
    import jiwer
    from whisper_normalizer.english import EnglishTextNormalizer

    normalise = EnglishTextNormalizer()
    return jiwer.wer([normalise(r) for r in references], [normalise(h) for h in hypotheses])
