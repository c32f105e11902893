"""The two commands a new user runs: `make run` twice processes the examples once."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dagster as dg

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p for p in (REPO / "examples").rglob("*") if p.suffix in {".flac", ".mp3"})


def _files(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): p.stat().st_size
        for p in folder.rglob("*")
        if p.is_file() and "dagster_home" not in p.parts
    }


def _make_run(data_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DIARY_DATA_DIR": str(data_dir), "DAGSTER_HOME": str(data_dir / "dagster_home")}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = f"{venv_bin}:{env['PATH']}"
    return subprocess.run(
        ["make", "--no-print-directory", "run", f"VENV={Path(sys.executable).parent.parent}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )


def test_make_run_twice_processes_the_examples_once(tmp_path):
    data_dir = tmp_path / "data"
    first = _make_run(data_dir)
    assert first.returncode == 0, first.stderr
    assert f"recordings: {len(EXAMPLES)} new (0 quarantined)" in first.stdout
    for example in EXAMPLES:
        assert example.name in first.stdout
    paths = [line.split(":", 1)[1].strip() for line in first.stdout.splitlines() if line.strip().startswith(("transcript:", "note:"))]
    assert len(paths) == 2 * len(EXAMPLES)
    assert all(Path(p).is_file() for p in paths)
    files_after_first = _files(data_dir)

    second = _make_run(data_dir)
    assert second.returncode == 0, second.stderr
    assert f"recordings: 0 new (0 quarantined), {len(EXAMPLES)} already ingested" in second.stdout
    assert _files(data_dir) == files_after_first, "the second run wrote nothing new"


def test_diary_run_json_reports_each_recording_and_quarantines_bad_input(tmp_path):
    bad = tmp_path / "broken.flac"
    bad.write_bytes(os.urandom(4096))
    env = {**os.environ, "DIARY_DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": str(tmp_path / "home")}
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "diary"), "run", str(EXAMPLES[0]), str(bad), "--json", "--user", "alice"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr
    records = {Path(r["file"]).name: r for r in map(json.loads, completed.stdout.splitlines())}
    good = records[EXAMPLES[0].name]
    assert good["status"] == "ok" and good["transcript"] and good["note_markdown"].startswith("# ")
    assert good["timings"]["transcribe_seconds"] > 0
    assert records["broken.flac"]["status"] == "quarantined"
    assert records["broken.flac"]["reason"] in {"undecodable", "no_audio_decoded"}
    assert bad.exists()


def test_diary_status_reports_recent_batches(tmp_path):
    env = {**os.environ, "DIARY_DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": str(tmp_path / "home")}
    diary = str(Path(sys.executable).parent / "diary")
    subprocess.run([diary, "run", str(EXAMPLES[0])], env=env, capture_output=True, text=True, timeout=600, check=True)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"")
    subprocess.run([diary, "run", str(bad)], env=env, capture_output=True, text=True, timeout=600, check=True)
    completed = subprocess.run([diary, "status"], env={**env, "COLUMNS": "80"}, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "Recent batches" in completed.stdout
    assert "2 batches · 2 recordings · 1 quarantined" in completed.stdout
    keys = [path.stem for path in (tmp_path / "data" / "batches").rglob("*.json")]
    assert len(keys) == 2 and all(key in completed.stdout for key in keys), "batch keys whole, to copy, at 80 columns"
    cost = float(re.search(r"cost so far \$([0-9.]+)", completed.stdout).group(1))
    assert cost > 0, "compute and storage count, not only language models"
    with dg.DagsterInstance.from_config(str(tmp_path / "home")) as instance:
        runs = instance.get_runs()
    assert {run.job_name for run in runs} == {"process_batch"}
    assert sorted(run.tags["diary/batch"] for run in runs) == sorted(keys)
    assert all(run.tags["diary/source"] == "cli" and run.tags["diary/users"] == "default" for run in runs)


def _diary(env: dict, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "diary"), *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_quarantine_list_filters_by_reason_and_redrive_processes_only_those(tmp_path):
    env = {**os.environ, "DIARY_DATA_DIR": str(tmp_path / "data"), "DAGSTER_HOME": str(tmp_path / "home")}
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    noise = tmp_path / "noise.flac"
    noise.write_bytes(os.urandom(4096))
    assert _diary(env, "run", str(EXAMPLES[0]), str(empty), str(noise)).returncode == 0

    listed = _diary(env, "quarantine", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    everything = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(r["source_name"] for r in everything) == ["empty.wav", "noise.flac"]
    assert "2 quarantined recordings" in listed.stderr

    only_empty = [json.loads(line) for line in _diary(env, "quarantine", "list", "--json", "--reason", "empty_file").stdout.splitlines()]
    assert [(r["source_name"], r["reason"]) for r in only_empty] == [("empty.wav", "empty_file")]

    redriven = _diary(env, "quarantine", "redrive", "--json", "--reason", "empty_file")
    assert redriven.returncode == 0, redriven.stderr
    [record] = [json.loads(line) for line in redriven.stdout.splitlines()]
    assert record["recording_id"] == only_empty[0]["recording_id"]
    assert (record["status"], record["reason"], record["new"]) == ("quarantined", "empty_file", True)
    assert record["batch_key"] != only_empty[0]["batch_key"], "processed again, as a new batch"
    assert record["file"] == "default/empty.wav", "the name it was uploaded under, not the stored original's"
    relisted = [json.loads(line) for line in _diary(env, "quarantine", "list", "--json").stdout.splitlines()]
    assert sorted(r["source_name"] for r in relisted) == ["empty.wav", "noise.flac"]
    by_id = _diary(env, "quarantine", "list", "--json", "--recording", everything[0]["recording_id"], "--user", "default")
    assert [json.loads(line)["recording_id"] for line in by_id.stdout.splitlines()] == [everything[0]["recording_id"]]

    for command in ("list", "redrive"):
        typo = _diary(env, "quarantine", command, "--reason", "nonsense")
        assert typo.returncode == 1 and "unknown reason code nonsense" in typo.stderr and "empty_file" in typo.stderr
    assert len(_diary(env, "quarantine", "list", "--json").stdout.splitlines()) == 2, "a typo re-drives nothing"


def test_a_platform_failure_exits_non_zero_with_one_clear_line(tmp_path):
    not_a_folder = tmp_path / "data"
    not_a_folder.write_text("a file where the data folder should be")
    env = {**os.environ, "DIARY_DATA_DIR": str(not_a_folder / "inside"), "DAGSTER_HOME": str(tmp_path / "home")}
    completed = _diary(env, "run", str(EXAMPLES[0]))
    assert completed.returncode == 1
    assert "diary: error:" in completed.stderr and "Not a directory" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not_a_folder.read_text() == "a file where the data folder should be"
