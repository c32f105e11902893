"""Mutation score per module from the last `mutmut run`, and the mutants that survived (`make mutation`).

mutmut 3 keeps its verdicts in mutants/<module path>.py.meta. Per module this prints the mutants,
how many the tests killed (a failing test or a timeout), how many survived, how many no selected test
reaches, and the score: killed / (killed + survived + no tests). Then every survivor with its diff.

    .venv/bin/python benchmarks/mutation_report.py [--no-diffs] [--fail-under 80]
"""

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.mutation.diff_apply import get_diff_for_mutant
from mutmut.stats import status_by_exit_code

MUTANTS = Path("mutants")
KILLED = {"killed", "timeout", "caught by type check"}


def results() -> dict[str, tuple[Path, dict[str, str]]]:
    """Per dotted module: its source file and the status of each of its mutants."""
    found = {}
    for meta in sorted(MUTANTS.rglob("*.py.meta")):
        source = meta.relative_to(MUTANTS).with_suffix("")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if codes:
            found[".".join(source.with_suffix("").parts)] = (source, {name: status_by_exit_code[code] for name, code in codes.items()})
    return found


def score(counts: Counter) -> float:
    killed = sum(counts[s] for s in KILLED)
    checked = killed + counts["survived"] + counts["no tests"]
    return 100.0 * killed / checked if checked else 100.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-diffs", action="store_true", help="name the survivors without their diffs")
    parser.add_argument("--fail-under", type=float, help="exit 1 when a module scores below this percentage")
    args = parser.parse_args()
    modules = results()
    if not modules:
        print("no mutmut results under mutants/: run `mutmut run` first", file=sys.stderr)
        return 2
    print(f"{'module':45} {'mutants':>7} {'killed':>6} {'survived':>8} {'no tests':>8} {'score':>6}")
    low = []
    for module, (_, statuses) in modules.items():
        counts = Counter(statuses.values())
        print(
            f"{module:45} {len(statuses):7} {sum(counts[s] for s in KILLED):6} {counts['survived']:8} "
            f"{counts['no tests']:8} {score(counts):5.1f}%"
        )
        if args.fail_under is not None and score(counts) < args.fail_under:
            low.append(module)
    for module, (source, statuses) in modules.items():
        survivors = sorted(name for name, status in statuses.items() if status in {"survived", "no tests"})
        if survivors:
            print(f"\n== {module}: {len(survivors)} not killed")
        for name in survivors:
            print(f"{name} ({statuses[name]})" if args.no_diffs else f"# {name} ({statuses[name]})\n{get_diff_for_mutant(name, path=source)}")
    if low:
        print(f"\nbelow {args.fail_under:g}%: {', '.join(low)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
