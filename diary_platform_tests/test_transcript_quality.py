"""Transcript quality drift on synthetic days (no audio, no model): an unchanged stream never alarms, what
noise, a word-dropping model or a quarantine wave do to a day is caught, small days are never judged, and
the A/B interval covers the true difference."""

from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, timezone

import dagster as dg
import numpy as np
import polars as pl
import pytest

from diary_platform.definitions import build_resources
from diary_platform.domain import catalog, schemas
from diary_platform.domain.ingest.batches import new_batch_key
from diary_platform.domain.models.drift import (
    ALL_ARMS,
    BASELINE_ARM,
    CANDIDATE_ARM,
    DRIFT,
    INSUFFICIENT_DATA,
    NUMERIC_METRICS,
    Window,
    ab_comparison,
    category_psi,
    psi,
    quality_report,
    recording_measures,
)
from diary_platform.models.transcript_quality import quality_drift, quarantine_or_guard_jump, transcript_quality_asset
from diary_platform.resources import open_store

FIRST_DAY = date(2026, 3, 1)
REASONS = ["undecodable", "too_long", "empty_file"]
GUARDS = ["silence", "compression_ratio", "repetition_loop"]


@dataclass(frozen=True)
class Stream:
    """How a day's recordings are drawn. Per recording: log-probability around `logprob` (sd 0.1, segments
    ±0.08 about it), no-speech probability ~ Beta(`no_speech`), 2 + Poisson(4) kept segments and
    Poisson(`guard_drops`) dropped ones, `words_per_second` (sd 0.3), SNR ~ N(`snr_db`, 4)."""

    recordings: int = 40
    logprob: float = -0.35
    no_speech: tuple[float, float] = (1.0, 15.0)
    words_per_second: float = 2.6
    guard_drops: float = 0.15
    snr_db: float = 25.0
    quarantine: float = 0.03
    model: str = "tiny.en"
    version: str = "tiny.en-3f2a9c"
    arm: str | None = None


UNCHANGED = Stream()
NOISY = replace(UNCHANGED, logprob=-0.75, no_speech=(4.0, 8.0), snr_db=12.0)
DROPS_WORDS = replace(UNCHANGED, words_per_second=1.6, guard_drops=1.5)
QUARANTINE_WAVE = replace(UNCHANGED, quarantine=0.35)


def draw(stream: Stream, day: date, rng: np.random.Generator, validate: bool = False) -> Window:
    """One batch of `stream` created at noon of `day`: its transcripts and validated_audio tables, with the
    schemas' columns (validated against them when asked) and an `arm` column when the stream has an arm."""
    batch_key = new_batch_key(datetime.combine(day, time(12), tzinfo=timezone.utc))
    transcripts, validated = [], []
    for _ in range(stream.recordings):
        sha = rng.bytes(32).hex()
        identity = {"recording_id": sha[:24], "content_sha256": sha, "batch_key": batch_key, "user": "ann", "priority": None,
                    "recorded_at": datetime.combine(day, time(9), tzinfo=timezone.utc), "status": "ok", "reason": None, "message": None}
        if rng.random() < stream.quarantine:
            identity |= {"status": "quarantined", "reason": str(rng.choice(REASONS)), "message": "synthetic"}
            validated.append(identity | schemas.blank_row(schemas.VALIDATED_AUDIO))
            transcripts.append(identity | schemas.blank_row(schemas.TRANSCRIPTS))
            continue
        audio_seconds = float(rng.uniform(10, 90))
        validated.append(identity | schemas.blank_row(schemas.VALIDATED_AUDIO) | {
            "duration_seconds": audio_seconds, "snr_db": float(rng.normal(stream.snr_db, 4)),
            "speech_ratio": float(rng.beta(8, 3)), "decode_seconds": 0.2,
        })
        centre = rng.normal(stream.logprob, 0.1)
        segments = [
            {"start": float(i), "end": float(i + 1), "text": "words", "avg_logprob": float(min(rng.normal(centre, 0.08), -0.01)),
             "no_speech_prob": float(rng.beta(*stream.no_speech)), "compression_ratio": float(rng.normal(1.6, 0.15))}
            for i in range(2 + rng.poisson(4))
        ]
        dropped = [{"start": 0.0, "end": 1.0, "text": "…", "guard": str(rng.choice(GUARDS))} for _ in range(rng.poisson(stream.guard_drops))]
        words = max(round(rng.normal(stream.words_per_second, 0.3) * audio_seconds), 0)
        transcripts.append(identity | schemas.blank_row(schemas.TRANSCRIPTS) | {
            "text": " ".join(["word"] * words), "language": str(rng.choice(["en", "de", "fr"], p=[0.9, 0.06, 0.04])),
            "language_probability": 0.9, "segments": segments, "dropped_segments": dropped,
            "avg_logprob": sum(s["avg_logprob"] for s in segments) / len(segments), "model": stream.model,
            "compute_type": "int8", "policy_rule": "default", "transcriber_version": stream.version,
            "audio_seconds": audio_seconds, "processing_seconds": audio_seconds / max(rng.normal(11, 1.5), 4),
        })
    window = Window(_table(schemas.TRANSCRIPTS, transcripts, validate), _table(schemas.VALIDATED_AUDIO, validated, validate))
    if stream.arm is None:
        return window
    return Window(window.transcripts.with_columns(arm=pl.lit(stream.arm)), window.validated)


def _table(schema, rows: list[dict], validate: bool) -> pl.DataFrame:
    if validate:
        return schemas.table(schema, rows)
    return pl.DataFrame(rows, schema={name: column.dtype.type for name, column in schema.columns.items()})


def joined(windows: list[Window]) -> Window:
    """Several days' batches as one window, the way Catalog.created_between concatenates them."""

    def concat(frames: list[pl.DataFrame]) -> pl.DataFrame:
        return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()

    return Window(concat([w.transcripts for w in windows]), concat([w.validated for w in windows]))


def flagged(report: pl.DataFrame) -> list[str]:
    raised = report.filter(pl.col("drifted") | pl.col("alarm"))
    return [f"{row['arm']} {row['metric']} {row['status']}" for row in raised.iter_rows(named=True)]


def test_an_unchanged_stream_raises_no_alarm_on_thirty_days():
    """37 days of the same stream: each of the last 30 against its previous 7 is judged (enough data) and
    never drifts or alarms, though a bare PSI > 0.25 line would have fired on most of them."""
    rng = np.random.default_rng(20260301)
    days = [draw(UNCHANGED, FIRST_DAY + timedelta(days=i), rng) for i in range(37)]
    bare_line_crossings = 0
    for i in range(7, 37):
        report = quality_report(days[i], joined(days[i - 7 : i]))
        assert flagged(report) == [], f"day {i - 6}"
        numeric = report.filter(pl.col("metric").is_in(NUMERIC_METRICS))
        assert numeric["status"].is_in(["ok", "watch"]).all() and numeric["psi"].is_not_null().all()
        bare_line_crossings += int((numeric["psi"] > 0.25).any())
    assert bare_line_crossings > 15, "at 40 recordings a day sampling noise alone crosses 0.25: why psi_noise exists"


@pytest.mark.parametrize(
    "day_stream, drifted, alarms",
    [
        (NOISY, {"avg_logprob", "no_speech_prob", "snr_db"}, set()),
        (DROPS_WORDS, {"words_per_second", "guard_drop_ratio"}, {"guard_drop_share"}),
        (QUARANTINE_WAVE, set(), {"quarantine_share"}),
    ],
    ids=["noise", "word-dropping model", "quarantine wave"],
)
def test_a_shifted_day_is_flagged_on_the_metrics_that_moved(day_stream, drifted, alarms):
    rng = np.random.default_rng(7)
    reference = joined([draw(UNCHANGED, FIRST_DAY + timedelta(days=i), rng) for i in range(7)])
    report = quality_report(draw(day_stream, FIRST_DAY + timedelta(days=7), rng), reference)
    assert drifted <= set(report.filter(pl.col("drifted"))["metric"])
    assert not report.filter(pl.col("drifted") & pl.col("metric").is_in(["speech_ratio", "compression_ratio"])).height
    assert alarms <= {metric.split("/")[0] for metric in report.filter(pl.col("alarm"))["metric"]}
    if not alarms:
        assert not report["alarm"].any()


def test_too_little_data_is_never_judged():
    """A 10-recording day, however shifted, and a full day with a 2-day, 5-recording history: no verdicts."""
    rng = np.random.default_rng(11)
    reference = joined([draw(UNCHANGED, FIRST_DAY + timedelta(days=i), rng) for i in range(7)])
    small_day = draw(replace(NOISY, recordings=10, quarantine=0.9), FIRST_DAY + timedelta(days=7), rng)
    thin_history = joined([draw(replace(UNCHANGED, recordings=5), FIRST_DAY + timedelta(days=i), rng) for i in range(2)])
    for day, history in [(small_day, reference), (draw(NOISY, FIRST_DAY, rng), thin_history), (draw(NOISY, FIRST_DAY, rng), joined([]))]:
        report = quality_report(day, history)
        assert set(report["status"]) == {INSUFFICIENT_DATA}
        assert not report["drifted"].any() and not report["alarm"].any() and report["psi"].is_null().all()


def test_a_model_that_writes_nothing_drifts_on_words_and_leaves_the_guard_share_unjudged():
    """No segments and no text from any recording: words per second collapses to 0 (drift); the guard-drop
    share of no segments at all is no evidence and is not judged."""
    rng = np.random.default_rng(17)
    reference = joined([draw(UNCHANGED, FIRST_DAY + timedelta(days=i), rng) for i in range(7)])
    day = draw(UNCHANGED, FIRST_DAY + timedelta(days=7), rng)
    silent = day.transcripts.with_columns(
        pl.col("segments").list.head(0), pl.col("dropped_segments").list.head(0), text=pl.lit(""), avg_logprob=None
    )
    rows = {row["metric"]: row for row in quality_report(Window(silent, day.validated), reference).iter_rows(named=True)}
    assert rows["words_per_second"]["drifted"] and rows["words_per_second"]["mean"] == 0
    assert rows["guard_drop_share"]["status"] == INSUFFICIENT_DATA and not rows["guard_drop_share"]["alarm"]


def test_old_tables_without_newer_columns_still_give_a_report():
    """Before the transcription policy there was no transcriber_version; older segments had no no_speech_prob
    and older validation no snr_db: the model name stands for the version, the missing metrics are unjudged."""
    rng = np.random.default_rng(3)

    def old(window: Window) -> Window:
        older_segments = pl.col("segments").list.eval(pl.struct(pl.element().struct.field("start", "end", "text", "avg_logprob")))
        transcripts = window.transcripts.drop("transcriber_version", "dropped_segments").with_columns(older_segments)
        return Window(transcripts, window.validated.drop("snr_db"))

    reference = joined([old(draw(UNCHANGED, FIRST_DAY + timedelta(days=i), rng)) for i in range(7)])
    report = quality_report(old(draw(UNCHANGED, FIRST_DAY + timedelta(days=7), rng)), reference)
    rows = {row["metric"]: row for row in report.filter(pl.col("arm") == ALL_ARMS).iter_rows(named=True)}
    assert rows["avg_logprob"]["transcriber_version"] == "tiny.en" and rows["avg_logprob"]["status"] == "ok"
    assert rows["no_speech_prob"]["n"] == rows["snr_db"]["n"] == 0 and rows["snr_db"]["status"] == INSUFFICIENT_DATA
    assert rows["guard_drop_share"]["mean"] == 0 and flagged(report) == []


def test_psi_of_known_histograms():
    """Half the day in the reference's lowest decile and half in its highest: 2 · (0.5 − 0.1)·ln 5 + 8 bins
    of (ε − 0.1)·ln(ε / 0.1) with ε = 0.5 / 100; identical categories give 0."""
    reference = np.arange(1000, dtype=float)
    day = np.concatenate([np.full(50, 10.0), np.full(50, 990.0)])
    epsilon = 0.5 / 100
    expected = 2 * 0.4 * np.log(5) + 8 * (epsilon - 0.1) * np.log(epsilon / 0.1)
    assert psi(day, reference) == (pytest.approx(expected), 10)
    assert category_psi(["en"] * 9 + ["de"], ["en"] * 90 + ["de"] * 10) == (pytest.approx(0.0), 2)


def _ab_day(rng: np.random.Generator, baseline: Stream, candidate: Stream) -> pl.DataFrame:
    return recording_measures(joined([draw(baseline, FIRST_DAY, rng), draw(candidate, FIRST_DAY, rng)]))


def test_the_ab_interval_covers_the_true_difference_and_excludes_zero_when_the_arms_differ():
    """Candidate arm +0.05 log-probability and guard drops of Poisson(0.6) instead of 0.15 per recording
    (true shares λ / (6 + λ)): over 200 days the 95 % intervals cover the true differences about 95 % of
    the time; with 60 recordings an arm both differences are told from 0."""
    baseline = replace(UNCHANGED, arm=BASELINE_ARM, quarantine=0.0)
    candidate = replace(baseline, arm=CANDIDATE_ARM, version="small-9b1d", model="small", logprob=-0.30, guard_drops=0.6)
    truth = {"avg_logprob": 0.05, "guard_drop_share": 0.6 / 6.6 - 0.15 / 6.15}
    rng = np.random.default_rng(5)
    covered = {metric: 0 for metric in truth}
    for _ in range(200):
        for row in ab_comparison(_ab_day(rng, baseline, candidate)).iter_rows(named=True):
            covered[row["metric"]] += row["ci_low"] <= truth[row["metric"]] <= row["ci_high"]
    assert all(0.90 <= count / 200 <= 0.99 for count in covered.values()), covered

    larger = _ab_day(rng, replace(baseline, recordings=60), replace(candidate, recordings=60))
    rows = {row["metric"]: row for row in ab_comparison(larger).iter_rows(named=True)}
    assert rows["avg_logprob"]["ci_low"] > 0 and rows["guard_drop_share"]["ci_low"] > 0
    assert (rows["avg_logprob"]["baseline_n"], rows["avg_logprob"]["candidate_n"]) == (60, 60)
    assert ab_comparison(_ab_day(rng, replace(baseline, recordings=10), candidate)).is_empty(), "under 20 an arm: no interval"


def test_ab_arms_are_judged_against_their_own_history():
    """The candidate's model version has no history yet: its rows are insufficient_data, the baseline's are judged."""
    rng = np.random.default_rng(9)
    baseline = replace(UNCHANGED, arm=BASELINE_ARM)
    candidate = replace(baseline, arm=CANDIDATE_ARM, version="small-9b1d", model="small")
    reference = joined([draw(baseline, FIRST_DAY + timedelta(days=i), rng) for i in range(7)])
    day = joined([draw(baseline, FIRST_DAY + timedelta(days=7), rng), draw(candidate, FIRST_DAY + timedelta(days=7), rng)])
    report = quality_report(day, reference)
    statuses = {arm: set(rows["status"]) for (arm,), rows in report.group_by("arm")}
    assert statuses[CANDIDATE_ARM] == {INSUFFICIENT_DATA} and INSUFFICIENT_DATA not in statuses[BASELINE_ARM]


A_B_DAY = (replace(UNCHANGED, arm=BASELINE_ARM), replace(UNCHANGED, arm=CANDIDATE_ARM, version="small-9b1d", model="small"))


@pytest.mark.parametrize(
    "history, day_streams, drift_passes, jump_passes",
    [(A_B_DAY[0], A_B_DAY, True, True), (UNCHANGED, (NOISY,), False, True), (UNCHANGED, (QUARANTINE_WAVE,), True, False)],
    ids=["unchanged baseline beside a new candidate", "noise", "quarantine wave"],
)
def test_the_asset_and_its_checks_on_stored_days(settings, history, day_streams, drift_passes, jump_passes):
    """Seven stored days and the day itself, written as the IO manager writes batch tables (schema-valid), read
    back through the catalog by `transcript_quality`: the WARN and ERROR checks pass or fail as the day says,
    and the metadata plots the baseline arm's PSIs and, with two arms, the A/B difference."""
    rng = np.random.default_rng(13)
    store = open_store(settings)
    for offset in range(8):
        for stream in day_streams if offset == 7 else (history,):
            window = draw(stream, FIRST_DAY + timedelta(days=offset), rng, validate=True)
            batch_key = window.transcripts["batch_key"][0]
            store.write_table(catalog.TRANSCRIPTS, batch_key, window.transcripts)
            store.write_table(catalog.VALIDATED_AUDIO, batch_key, window.validated)
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [transcript_quality_asset(settings), quality_drift, quarantine_or_guard_jump],
            partition_key=(FIRST_DAY + timedelta(days=7)).isoformat(),
            instance=instance,
            resources=build_resources(settings),
        )
    checks = {check.check_name: check for check in result.get_asset_check_evaluations()}
    drift, jump = checks["quality_drift"], checks["quarantine_or_guard_jump"]
    assert (drift.passed, jump.passed) == (drift_passes, jump_passes)
    assert (drift.severity, jump.severity) == (dg.AssetCheckSeverity.WARN, dg.AssetCheckSeverity.ERROR)
    if not drift_passes:
        assert "avg_logprob psi" in drift.metadata["drifted"].value
    if not jump_passes:
        assert jump.metadata["alarms"].value.startswith("quarantine_share ")
    metadata = result.asset_materializations_for_node("transcript_quality")[0].metadata
    assert {"max_psi", "psi/avg_logprob", "psi/language", "quarantine_share", "guard_drop_share", "report"} <= set(metadata)
    report = result.output_for_node("transcript_quality")
    baseline_logprob = report.filter((pl.col("arm") == (history.arm or ALL_ARMS)) & (pl.col("metric") == "avg_logprob"))
    assert metadata["psi/avg_logprob"].value == pytest.approx(baseline_logprob["psi"][0], abs=1e-6)
    assert (report.filter(pl.col("drifted"))["status"] == DRIFT).all()
    ab = {name: metadata[name].value for name in ("ab/logprob_ci_low", "ab/logprob_delta", "ab/logprob_ci_high") if name in metadata}
    assert len(ab) == (3 if len(day_streams) == 2 else 0)
    assert list(ab.values()) == sorted(ab.values())
