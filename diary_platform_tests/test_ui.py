"""The Dagster UI in a real browser: Debian's chromium, driven by Playwright, against `dg dev` started here.

It sees the lineage of every asset, launches a batch with one bad file from the UI and waits for the
run; finds the bad file's name, reason and the cost per recording in the batch's table; re-drives the
quarantine from the Launchpad and sees the new batch processed; adds a partition by hand and sees its
run fail once with the clear message; opens the note preview and the cost report. Screenshots go to
test-artifacts/ui/.
"""

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pytest

from diary_platform.definitions import build_resources
from diary_platform_tests.conftest import free_port, new_batch, unavailable

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts" / "ui"
CHROMIUM = "/usr/bin/chromium"
LOCATION = "diary_platform.definitions"
HAND_MADE = "my-own-batch"
ASSETS = ["raw_audio", "validated_audio", "transcripts", "diary_notes", "daily_digest", "cost_report"]
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]


def _chromium() -> str:
    """Debian's chromium, installed with apt when missing (never a downloaded browser build)."""
    if not Path(CHROMIUM).exists() and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=env, capture_output=True, timeout=900)
    if not Path(CHROMIUM).exists():
        unavailable("Debian's chromium is not installed and could not be installed with apt-get")
    return CHROMIUM


@pytest.fixture
def webserver(tmp_path, clips):
    """`dagster dev` (webserver and daemon) on a free port with a temporary DAGSTER_HOME, one batch waiting."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "DIARY_DATA_DIR": str(tmp_path / "data")}
    old_env = {key: os.environ.get(key) for key in ("DAGSTER_HOME", "DIARY_DATA_DIR")}
    os.environ.update({key: env[key] for key in old_env})
    try:
        from diary_platform.settings import Settings

        settings = Settings()
        bad = tmp_path / "notes.mp3"
        bad.write_text("this is a text file, not a recording\n" * 20)
        manifest = new_batch(settings, [*(c.path for c in clips[:2]), bad])
        with dg.DagsterInstance.get() as instance:
            instance.add_dynamic_partitions("batches", [manifest.key])
        port = free_port()
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "dg"), "dev", "-m", "diary_platform.definitions", "-h", "127.0.0.1", "-p", str(port)],
            env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{url}/server_info", timeout=2)
                break
            except OSError:
                time.sleep(1)
        yield {"url": url, "batch": manifest.key, "settings": settings, "clip": clips[0].path.name}
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    finally:
        for key, value in old_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _dismiss_welcome(page) -> None:
    """A fresh instance greets with a community dialog; skip it."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.click(timeout=5000)
    except Exception:  # not shown: nothing to dismiss
        pass


def _wait_for_run(tags: dict[str, str], status=dg.DagsterRunStatus.SUCCESS, timeout: float = 420, job_name=None) -> dg.DagsterRun:
    """The newest run with these tags (of this job), once it has ended with `status` (read from the instance)."""
    deadline = time.monotonic() + timeout
    with dg.DagsterInstance.get() as instance:
        while time.monotonic() < deadline:
            runs = instance.get_runs(filters=dg.RunsFilter(tags=tags, job_name=job_name), limit=1)
            if runs and runs[0].status == status:
                return runs[0]
            if runs and runs[0].status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
                pytest.fail(f"the run with tags {tags} ended {runs[0].status}, not {status}")
            time.sleep(2)
    pytest.fail(f"no run with tags {tags} ended {status} within {timeout:g} s")


def _has_partition(key: str) -> bool:
    with dg.DagsterInstance.get() as instance:
        return instance.has_dynamic_partition("batches", key)


def _wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not there after {timeout:g} s")
        time.sleep(1)


def _step_failures(run_id: str) -> list[str]:
    with dg.DagsterInstance.get() as instance:
        return [
            entry.dagster_event.step_failure_data.user_failure_data.description
            for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)
        ]


def test_the_ui_runs_a_batch_explains_its_bad_file_redrives_it_refuses_a_hand_made_batch_and_shows_notes_and_costs(webserver):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    url, batch = webserver["url"], webserver["batch"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        page.set_default_timeout(60_000)

        page.goto(f"{url}/assets/raw_audio?view=lineage&lineageScope=downstream&lineageDepth=6")
        _dismiss_welcome(page)
        for asset in ASSETS:
            expect(page.get_by_text(asset, exact=True).first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "lineage.png"))

        page.goto(f"{url}/assets/diary_notes?view=lineage&lineageScope=upstream&lineageDepth=4")
        page.get_by_role("button", name="Materialize all…").click()
        page.screenshot(path=str(ARTIFACTS / "dialog.png"))
        page.get_by_text("Select a partition or create one").click()
        page.keyboard.type(batch)
        page.get_by_text("Select all (1)", exact=True).click()
        page.get_by_text("Launch runs to materialize 4 assets").click()
        expect(page.get_by_text("1 partition", exact=True).first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "launch.png"))
        page.get_by_role("button", name="Launch 1 run").click()
        expect(page.get_by_text("Launch runs to materialize 4 assets")).to_be_hidden()
        run_id = _wait_for_run({"dagster/partition": batch}).run_id

        page.goto(f"{url}/runs/{run_id}")
        expect(page.get_by_text("Success", exact=True).first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "run.png"))

        page.goto(f"{url}/assets/validated_audio?view=events&partition={batch}")
        expect(page.get_by_text("per_recording").first).to_be_visible()
        for text in ("notes.mp3", "undecodable", "Not a readable audio file", "cost_usd", webserver["clip"]):
            expect(page.get_by_text(text).first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "per_recording.png"), full_page=True)

        page.goto(f"{url}/locations/{LOCATION}/jobs/redrive_job/playground")
        page.get_by_role("button", name="Launch Run").click()
        redrive = _wait_for_run({}, job_name="redrive_job")
        redriven = redrive.tags["diary/redriven_batch"]
        processed = _wait_for_run({"dagster/partition": redriven, "diary/source": "redrive"})
        page.goto(f"{url}/runs/{processed.run_id}")
        expect(page.get_by_text("Success", exact=True).first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "redrive_run.png"))
        page.goto(f"{url}/assets/validated_audio?view=events&partition={redriven}")
        expect(page.get_by_text("notes.mp3").first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "redriven_batch.png"), full_page=True)

        lineage = f"{url}/assets/diary_notes?view=lineage&lineageScope=upstream&lineageDepth=4"
        page.goto(lineage)
        page.get_by_role("button", name="Materialize all…").click()
        page.get_by_text("Select a partition or create one").click()
        page.get_by_text("Add partition").click()
        page.get_by_placeholder("name").fill(HAND_MADE)
        page.get_by_role("button", name="Save").click()
        expect(page.get_by_text("Add a partition for")).to_be_hidden()
        _wait_for(lambda: _has_partition(HAND_MADE), "the partition added in the UI")
        page.screenshot(path=str(ARTIFACTS / "hand_made_partition.png"))
        page.goto(lineage)  # a fresh dialog: select the new partition as any other
        page.get_by_role("button", name="Materialize all…").click()
        page.get_by_text("Select a partition or create one").click()
        page.keyboard.type(HAND_MADE)
        page.get_by_text("Select all (1)", exact=True).click()
        page.get_by_role("button", name="Launch 1 run").click()
        failed = _wait_for_run({"dagster/partition": HAND_MADE}, status=dg.DagsterRunStatus.FAILURE)
        assert [f for f in _step_failures(failed.run_id) if f] == [
            f"there is no manifest for {HAND_MADE!r}: batches come from the landing sensor or `diary run`"]
        page.goto(f"{url}/runs/{failed.run_id}")
        expect(page.get_by_text("batches come from the landing sensor").first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "hand_made_failed.png"))
        with dg.DagsterInstance.get() as instance:
            assert len(instance.get_runs(filters=dg.RunsFilter(tags={"dagster/partition": HAND_MADE}))) == 1, "failed once, no retries"

        page.goto(f"{url}/assets/diary_notes?view=events&partition={batch}")
        expect(page.get_by_text("preview").first).to_be_visible()
        page.get_by_text("[Show Markdown]").first.click()
        expect(page.get_by_text("Today I walked to the market", exact=False).first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "note_preview.png"))

        day = datetime.now(timezone.utc).date().isoformat()
        settings = webserver["settings"]
        from diary_platform.daily.cost_report import cost_report_asset

        with dg.DagsterInstance.get() as instance:
            dg.materialize([cost_report_asset(settings)], partition_key=day, instance=instance, resources=build_resources(settings))
        page.goto(f"{url}/assets/cost_report?view=events&partition={day}")
        expect(page.get_by_text("usd_per_audio_hour").first).to_be_visible()
        expect(page.get_by_text("alice").first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / "cost_report.png"), full_page=True)
        browser.close()
    notes = list((Path(webserver["settings"].data_dir) / "hot" / "notes").glob("*.md"))
    assert len(notes) == 2
