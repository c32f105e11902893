"""What notes cost for a day of recordings under each policy, from the price table: dollars per 1,000 recordings.

A synthetic day: recording lengths drawn from a log-normal (median 90 s, a long tail to two hours, the
shape of voice diaries), spoken at 150 words a minute in 5-second segments, rendered with the platform's
own transcript format and prompt (domain/notes/prompting.py), so the token counts are the ones the
providers would see (estimated at four characters a token). Priorities: 5 % urgent, 60 % normal, 35 % bulk.
Each note is one call; its output is 150 tokens plus a tenth of its transcript, at most 1,200. The
routes are those of config/llm.example.yaml:

- all synchronous: every note at once on its priority's first model (urgent: Claude Sonnet 4.5; normal and
  bulk: GPT-4o mini; bulk transcripts over 6,000 tokens: GPT-4.1 mini);
- batch for non-urgent: the same models, normal and bulk notes through the batch APIs (the batch share);
- batch + caching: as above, the stable prefix (system prompt, template, schema) read from the prompt
  cache where it reaches the model's minimum cacheable length: 95 % of synchronous calls hit a warm cache
  at this volume; in batches hits are best effort (`--batch-cache-hits`, 30 % by default). Misses on
  Anthropic write the cache (1.25x).

It prints the figures for the real prefix of the default template and for a template with worked examples
(`--long-prefix` tokens, 2,500 by default), where caching starts to pay. The baseline is the first column.

    python benchmarks/llm_cost.py [--recordings 10000] [--seed 7]
"""

import argparse
import math
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diary_platform.domain.notes import prompting  # noqa: E402
from diary_platform.domain.notes.draft import json_schema  # noqa: E402
from diary_platform.domain.notes.spend import TokenUsage, call_cost, load_prices  # noqa: E402

WORDS = "today I went to the market with my sister and we talked about the garden the weather work tomorrow".split()
PRIORITY_SHARES = (("urgent", 0.05), ("normal", 0.60), ("bulk", 0.35))
MODELS = {"urgent": "claude-sonnet-4-5", "normal": "gpt-4o-mini", "bulk": "gpt-4o-mini"}
LONG_BULK_MODEL, LONG_OVER_TOKENS = "gpt-4.1-mini", 6000
SYNC_CACHE_HITS = 0.95


def transcript_tokens(seconds: float, rng: random.Random) -> int:
    segments = []
    for start in range(0, max(int(seconds), 1), 5):
        words = " ".join(rng.choice(WORDS) for _ in range(int(min(5, seconds - start) * 150 / 60) or 1))
        segments.append({"start": float(start), "end": float(min(start + 5, seconds)), "text": words})
    return prompting.estimate_tokens(prompting.render_transcript(segments, redacted=False))


def day_of_recordings(count: int, rng: random.Random) -> list[tuple[str, int]]:
    """(priority, transcript tokens) per recording."""
    recordings = []
    for _ in range(count):
        seconds = min(rng.lognormvariate(math.log(90), 1.0), 7200.0)
        priority = rng.choices([p for p, _ in PRIORITY_SHARES], [s for _, s in PRIORITY_SHARES])[0]
        recordings.append((priority, transcript_tokens(seconds, rng)))
    return recordings


def note_cost(prices: dict, priority: str, tokens: int, prefix: int, batch: bool, caching: bool, batch_hits: float) -> float:
    """The expected dollars of one note."""
    model = LONG_BULK_MODEL if priority == "bulk" and tokens > LONG_OVER_TOKENS else MODELS[priority]
    price = prices[model]
    usage = TokenUsage(input_tokens=prefix + tokens + 20, output_tokens=min(150 + tokens // 10, 1200), batch=batch)
    if not caching or prefix < price.get("min_cached_prefix_tokens", 1024):
        return call_cost(prices, model, usage)
    hits = batch_hits if batch else SYNC_CACHE_HITS
    writes = "cache_write" in price
    hit = TokenUsage(usage.input_tokens, usage.output_tokens, cached_input_tokens=prefix, batch=batch)
    miss = TokenUsage(usage.input_tokens, usage.output_tokens, cache_write_tokens=prefix if writes else 0, batch=batch)
    return hits * call_cost(prices, model, hit) + (1 - hits) * call_cost(prices, model, miss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--long-prefix", type=int, default=2500)
    parser.add_argument("--batch-cache-hits", type=float, default=0.3)
    args = parser.parse_args()
    prices = load_prices()
    rng = random.Random(args.seed)
    recordings = day_of_recordings(args.recordings, rng)
    real_prefix = prompting.estimate_tokens(prompting.system_prompt(prompting.load_template("diary_entry"), json_schema()))
    tokens = sorted(t for _, t in recordings)
    print(f"{args.recordings} recordings; transcript tokens: median {tokens[len(tokens) // 2]}, "
          f"p95 {tokens[int(len(tokens) * 0.95)]}, max {tokens[-1]}; "
          f"long bulk (> {LONG_OVER_TOKENS}): {sum(1 for p, t in recordings if p == 'bulk' and t > LONG_OVER_TOKENS)}")
    policies = (("all synchronous", False, False), ("batch for non-urgent", True, False), ("batch + caching", True, True))
    per_thousand = 1000 / args.recordings
    print(f"{'prompt prefix':<32}" + "".join(f"{name:>24}" for name, _, _ in policies) + f"{'saved (last vs first)':>24}")
    for label, prefix in ((f"default template ({real_prefix} tok)", real_prefix), (f"with examples ({args.long_prefix} tok)", args.long_prefix)):
        totals = []
        for _, batching, caching in policies:
            total = sum(note_cost(prices, p, t, prefix, batching and p != "urgent", caching, args.batch_cache_hits) for p, t in recordings)
            totals.append(total * per_thousand)
        cells = "".join(f"{f'${v:.4f} ({v / totals[0]:.2f}x)':>24}" for v in totals)
        print(f"{label:<32}{cells}{f'${totals[0] - totals[-1]:.4f}':>24}")
    print("dollars per 1,000 recordings (ratio to all synchronous); prices: diary_platform/config/prices.yaml")


if __name__ == "__main__":
    main()
