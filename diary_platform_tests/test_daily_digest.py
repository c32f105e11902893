"""The daily digest: one entry per user and day, written through the router, again for late recordings."""

import os
from datetime import date, datetime, timedelta, timezone

import dagster as dg

from diary_platform.daily import late_recordings_sensor
from diary_platform.daily.daily_digest import daily_digest_asset
from diary_platform.daily.todays_refresh import DIGEST_EVERY_MINUTES, TodayCursor, plan, todays_refresh
from diary_platform.definitions import build_definitions
from diary_platform.definitions import build_resources
from diary_platform.runner import process_files
from diary_platform_tests.fake_llm import OPENAI, FakeLLM

DAY = date(2026, 11, 20)


def _recorded_on(paths, tmp_path, hours):
    """Copies of the clips whose file times say they were recorded on DAY at the given hours."""
    copies = []
    for path, hour in zip(paths, hours):
        copy = tmp_path / "uploads" / path.name
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(path.read_bytes())
        stamp = datetime(DAY.year, DAY.month, DAY.day, hour, 15, tzinfo=timezone.utc).timestamp()
        os.utime(copy, (stamp, stamp))
        copies.append(copy)
    return copies


def test_the_digest_lists_every_recording_of_the_day_in_order_and_late_ones_trigger_it_again(tmp_path, monkeypatch, clips):
    with FakeLLM() as fake:
        config = tmp_path / "llm.yaml"
        config.write_text(
            "providers:\n"
            f"  - {{name: openai, kind: openai, models: [gpt-4o-mini], api_key_env: OPENAI_API_KEY, base_url: '{fake.openai_url}'}}\n"
        )
        monkeypatch.setenv("DIARY_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("DIARY_LLM_CONFIG", str(config))
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        from diary_platform.settings import Settings

        settings = Settings()
        resources = build_resources(settings)
        daily_digest = daily_digest_asset(settings)
        files = _recorded_on([c.path for c in clips[:3]], tmp_path, hours=[20, 8, 13])
        with dg.instance_for_test() as instance:
            report = process_files(files, "alice", settings, instance)
            fake.log.clear()
            result = dg.materialize([daily_digest], partition_key=DAY.isoformat(), instance=instance, resources=resources)
            digest = result.output_for_node("daily_digest")
            assert digest.height == 1 and digest["user"][0] == "alice" and digest["day"][0] == DAY
            by_hour = {r.recording_id: h for r, h in zip(report.results, [20, 8, 13])}
            assert digest["recording_ids"][0].to_list() == sorted(by_hour, key=by_hour.get)
            markdown = digest["markdown"][0]
            assert "## Recordings of the day" in markdown
            assert [line[2:7] for line in markdown.splitlines() if line.startswith("- ") and "`" in line] == [
                "08:15", "13:15", "20:15",
            ]
            assert digest["provider"][0] == "openai" and digest["cost_usd"][0] > 0
            assert len(fake.requests(OPENAI)) == 1

            empty = dg.materialize([daily_digest], partition_key="2026-11-21", instance=instance, resources=resources)
            assert empty.output_for_node("daily_digest").height == 0

            definitions = build_definitions(settings)
            with dg.build_sensor_context(instance=instance, resources=resources, definitions=definitions) as context:
                requests = late_recordings_sensor.evaluate_tick(context).run_requests
            assert [(r.partition_key, r.run_key) for r in requests] == [
                (DAY.isoformat(), f"{DAY.isoformat()}:{report.results[0].batch_key}")
            ]


def test_the_schedule_asks_for_yesterday_once_the_day_has_closed():
    from diary_platform.daily import daily_schedule

    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 27, 0, 30, tzinfo=timezone.utc))
    request = daily_schedule(context)
    assert request.partition_key == "2026-11-26" and request.job_name in (None, "daily_job")


def test_todays_costs_follow_each_landed_batch_and_the_digest_at_most_every_quarter_hour(settings, instance, clips):
    definitions = build_definitions(settings)
    today = datetime.now(timezone.utc).date().isoformat()

    def tick(cursor):
        with dg.build_sensor_context(instance=instance, cursor=cursor, definitions=definitions) as context:
            result = todays_refresh.evaluate_tick(context)
        return {tuple(key.to_user_string() for key in r.asset_selection): r.partition_key for r in result.run_requests}, result.cursor

    def quarter_hour(moment: datetime) -> datetime:
        return moment.replace(minute=moment.minute - moment.minute % DIGEST_EVERY_MINUTES, second=0, microsecond=0)

    def digest_if_a_quarter_turned(cursor: str) -> dict:
        """The real clock drives the sensor: a quarter hour that turned since the landing it saw makes the digest due."""
        since = datetime.fromisoformat(TodayCursor.from_json(cursor).digest_due_since)
        return {("daily_digest",): today} if quarter_hour(datetime.now(timezone.utc)) > since else {}

    requested, quiet = tick(None)
    assert requested == {}, "nothing landed yet"
    process_files([clips[0].path], "alice", settings, instance)
    requested, landed = tick(quiet)
    assert requested == {("cost_report",): today}, "the digest is due from this landing on, not at it"
    requested, again = tick(landed)
    if requested:  # a quarter hour turned between the ticks: the digest alone was due, and nothing else
        assert requested == {("daily_digest",): today} == digest_if_a_quarter_turned(landed)
        return
    assert TodayCursor.from_json(again).digest_due_since, "the digest waits for the next quarter hour"
    process_files([clips[1].path], "alice", settings, instance)
    requested, _ = tick(again)
    digest = {("daily_digest",): today} if ("daily_digest",) in requested else {}
    assert digest == {} or digest == digest_if_a_quarter_turned(again), "the digest only once its quarter hour began"
    assert requested == {("cost_report",): today, **digest}


def test_the_digest_waits_for_the_next_quarter_hour_and_a_run_in_progress_waits_for_the_next_tick():
    at = datetime(2026, 11, 20, 10, 2, tzinfo=timezone.utc)
    refresh, cursor = plan(TodayCursor(), 7, at, busy=set())
    assert refresh == ["cost_report"] and cursor == TodayCursor(7, at.isoformat())
    assert plan(cursor, 7, at + timedelta(minutes=12), busy=set()) == ([], cursor)
    refresh, cursor = plan(cursor, 7, at + timedelta(minutes=13), busy=set())
    assert refresh == ["daily_digest"] and cursor == TodayCursor(7, None)
    refresh, waiting = plan(cursor, 9, at + timedelta(minutes=14), busy={"cost_report"})
    assert refresh == [] and waiting.notes_seen == 7, "a cost report already running: the landing stays unhandled"
    assert plan(waiting, 9, at + timedelta(minutes=15), busy=set())[0] == ["cost_report"]
    late = TodayCursor(9, datetime(2026, 11, 19, 23, 50, tzinfo=timezone.utc).isoformat())
    assert plan(late, 9, at, busy=set()) == ([], TodayCursor(9, None)), "a closed day is the schedule's"
