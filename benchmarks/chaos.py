"""Soak test of the recovery model: `diary run` killed at random moments, started again, round after round.

Each round starts `diary run` on the same folder of clips and SIGKILLs it after a random delay (some
rounds it finishes first); a final run is left to finish. Then it counts, from the stored tables and the
Dagster instance, what the promise "nothing lost, ever" is about:

    recordings        clips in the folder
    processed once    recordings with exactly one `ok` note, in exactly one batch, and its transcript file
    lost              recordings with no note at all
    duplicated        recordings noted in more than one batch
    strays            temp files left in the data folder, runs left 'started', claims of batches without a manifest

    .venv/bin/python benchmarks/chaos.py [--rounds 20] [--seed 7] [--max-delay 14]
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import EVAL, REPO

import dagster as dg
import polars as pl

from diary_platform.domain.catalog import DIARY_NOTES, TRANSCRIPTS, Catalog
from diary_platform.domain.shared_state import open_shared_state
from diary_platform.domain.store.layout import DataStore

DIARY = str(Path(sys.executable).parent / "diary")


def clips(folder: Path) -> list[Path]:
    sources = [EVAL / "speech", EVAL / "real"] if EVAL.exists() else [REPO / "diary_platform_tests" / "data"]
    copied = []
    for source in sources:
        for clip in sorted(source.iterdir()):
            if clip.suffix in {".flac", ".mp3", ".m4a", ".ogg", ".opus", ".wav"}:
                copied.append(Path(shutil.copy(clip, folder / f"{source.name}-{clip.name}")))
    return copied


def census(data_dir: Path, home: Path, recordings: set[str]) -> dict:
    catalog = Catalog(DataStore(data_dir))
    noted: dict[str, int] = {}
    for key in catalog.keys(DIARY_NOTES):
        for row in catalog.batch(DIARY_NOTES, key).filter(pl.col("status") == "ok").iter_rows(named=True):
            noted[row["recording_id"]] = noted.get(row["recording_id"], 0) + 1
    transcribed = {row["recording_id"] for key in catalog.keys(TRANSCRIPTS) for row in catalog.batch(TRANSCRIPTS, key).iter_rows(named=True)}
    once = {r for r in recordings if noted.get(r) == 1 and r in transcribed and (data_dir / "hot" / "transcripts" / f"{r}.txt").exists()}
    batches = open_shared_state(data_dir).batches
    claim_batches = {json.loads(p.read_text())["batch"] for p in (data_dir / "claims" / "content").rglob("*.json")}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        unfinished = [r.run_id for r in instance.get_runs() if r.status not in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)]
    return {
        "processed_once": len(once),
        "lost": sorted(r for r in recordings if r not in noted),
        "duplicated": sorted(r for r, n in noted.items() if n > 1),
        "stray_temp_files": [str(p) for p in data_dir.rglob(".*.tmp")],
        "runs_left_started": unfinished,
        "claims_without_manifest": sorted(k for k in claim_batches if not batches.exists(k)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-delay", type=float, default=14.0, help="longest wait before the kill, in seconds")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="diary-chaos-") as root:
        folder = Path(root) / "uploads"
        folder.mkdir()
        uploads = clips(folder)
        env = {**os.environ, "DIARY_DATA_DIR": f"{root}/data", "DAGSTER_HOME": f"{root}/home", "DIARY_BATCH_MAX_FILES": "4"}
        from diary_platform.domain.store.hashing import recording_id_for, sha256_file

        recordings = {recording_id_for(sha256_file(p)) for p in uploads}
        kills = finished = 0
        started = time.perf_counter()
        for number in range(1, args.rounds + 1):
            delay = rng.uniform(0.5, args.max_delay)
            run = subprocess.Popen([DIARY, "run", str(folder)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                run.wait(timeout=delay)
                finished += 1
                outcome = f"finished (exit {run.returncode})"
            except subprocess.TimeoutExpired:
                run.send_signal(signal.SIGKILL)
                run.wait()
                kills += 1
                outcome = f"killed after {delay:.1f} s"
            print(f"round {number:2}: {outcome}", flush=True)
        final = subprocess.run([DIARY, "run", str(folder)], env=env, capture_output=True, text=True)
        print(f"final run: exit {final.returncode}; {final.stdout.strip().splitlines()[-1] if final.stdout.strip() else final.stderr[-500:]}")
        counts = census(Path(root) / "data", Path(root) / "home", recordings)
        print(
            f"\nrounds {args.rounds} · kills {kills} · finished before the kill {finished} · recordings {len(recordings)} · "
            f"processed exactly once {counts['processed_once']} · lost {len(counts['lost'])} · "
            f"duplicated {len(counts['duplicated'])} · stray temp files {len(counts['stray_temp_files'])} · "
            f"runs left started {len(counts['runs_left_started'])} · claims without a manifest {len(counts['claims_without_manifest'])}"
            f" · {time.perf_counter() - started:.0f} s"
        )
        problems = {k: v for k, v in counts.items() if k != "processed_once" and v}
        if problems or counts["processed_once"] != len(recordings):
            print(json.dumps(problems, indent=2))
            sys.exit(1)


if __name__ == "__main__":
    main()
