"""Transcript quality drift: does a day's transcription look like the week before it?

No labels arrive with production audio, so quality is watched through what the model and the validation
step say about every recording: per recording the mean log-probability, no-speech probability and
compression ratio of its segments, the share of its segments the guards dropped, words per second of
audio, language, SNR, speech ratio and speed; per day the share of recordings quarantined (by reason)
and of segments the guards dropped. Each (model version, arm) group of the day is compared with the
same group's rows of the previous `REFERENCE_DAYS` days.

Population stability index (PSI), for a metric with day values (n of them) and reference values (m):
bins are cut at the reference's deciles (ties merged, so a metric with few distinct values has fewer
bins; the language mix uses its categories as bins), bins empty on both sides are left out, and

    PSI = Σ_b (p_b − q_b) · ln(p_b / q_b),   p_b = max(day_b / n, ε_n),  q_b = max(reference_b / m, ε_m),

with ε_k = 0.5 / k (half a recording) for a bin one side has no value in. PSI > 0.25 is the usual
"shifted" line and 0.10–0.25 "watch" — but PSI has a floor of sampling noise: with no change at all,
(n·m / (n + m)) · PSI is about χ² with (bins − 1) degrees of freedom, so 40 recordings a day against
280 average PSI ≈ 0.26 over ten bins (measured: the bare 0.25 line is crossed on 55 % of unchanged
metric-days). A level therefore also needs PSI above `psi_noise`, the χ² quantile an unchanged stream
exceeds on one metric-day in 10,000, scaled by (1/n + 1/m). At 40 a day that bound is ≈ 0.98, so only
shifts of about one standard deviation and more are called drift; from ~400 a day the 0.25 line rules.

Shares (quarantine, guard drops) alarm when the day's share is more than 0.10 above the reference's
and at least twice it. A group or day with fewer than `MIN_RECORDINGS` recordings on either side is
`insufficient_data`, and never drifts or alarms.
"""

from dataclasses import dataclass
from math import sqrt
from statistics import NormalDist

import numpy as np
import polars as pl

from diary_platform.domain.schemas import STATUS_OK, STATUS_QUARANTINED

TRANSCRIPT_QUALITY = "transcript_quality"

REFERENCE_DAYS = 7
BINS = 10
MIN_RECORDINGS = 20
PSI_WATCH = 0.10
PSI_DRIFT = 0.25
FALSE_DRIFT_RATE = 1e-4  # per metric and day: where psi_noise is drawn
SHARE_JUMP = 0.10  # absolute rise of a share that alarms…
SHARE_RATIO = 2.0  # …when the share is also at least this many times the reference's
CONFIDENCE = 0.95

BASELINE_ARM, CANDIDATE_ARM, ALL_ARMS = "baseline", "candidate", "all"
# Version, model and arm of the day-wide rows: quarantine happens before any model sees the audio.
EVERY_GROUP = "(all)"
UNKNOWN = "unknown"

NUMERIC_METRICS = (
    "avg_logprob",
    "no_speech_prob",
    "compression_ratio",
    "guard_drop_ratio",
    "words_per_second",
    "snr_db",
    "speech_ratio",
    "speed",
)
LANGUAGE = "language"
QUARANTINE_SHARE = "quarantine_share"
GUARD_DROP_SHARE = "guard_drop_share"

OK, WATCH, DRIFT, ALARM, INSUFFICIENT_DATA = "ok", "watch", "drift", "alarm", "insufficient_data"

GROUP = ["transcriber_version", "arm"]
REPORT_SCHEMA = {
    "transcriber_version": pl.Utf8,
    "model": pl.Utf8,
    "arm": pl.Utf8,
    "metric": pl.Utf8,
    "n": pl.Int64,
    "reference_n": pl.Int64,
    "mean": pl.Float64,
    "reference_mean": pl.Float64,
    "psi": pl.Float64,
    "psi_noise": pl.Float64,
    "jump": pl.Float64,
    "status": pl.Utf8,
    "drifted": pl.Boolean,
    "alarm": pl.Boolean,
}
AB_SCHEMA = {
    "metric": pl.Utf8,
    "baseline_n": pl.Int64,
    "candidate_n": pl.Int64,
    "baseline": pl.Float64,
    "candidate": pl.Float64,
    "delta": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
}

# The columns read, with their types: older tables may lack some (no `transcriber_version` before the
# transcription policy, no `arm` unless an A/B split writes one); a missing column reads as nulls.
_TRANSCRIPT_COLUMNS = {
    "batch_key": pl.Utf8,
    "recording_id": pl.Utf8,
    "status": pl.Utf8,
    "text": pl.Utf8,
    "language": pl.Utf8,
    "avg_logprob": pl.Float64,
    "model": pl.Utf8,
    "transcriber_version": pl.Utf8,
    "arm": pl.Utf8,
    "audio_seconds": pl.Float64,
    "processing_seconds": pl.Float64,
}
_VALIDATED_COLUMNS = {
    "batch_key": pl.Utf8,
    "recording_id": pl.Utf8,
    "status": pl.Utf8,
    "reason": pl.Utf8,
    "snr_db": pl.Float64,
    "speech_ratio": pl.Float64,
}


@dataclass(frozen=True)
class Window:
    """The stored rows of one or more days, as `Catalog.created_between` returns them."""

    transcripts: pl.DataFrame
    validated: pl.DataFrame


def _with_columns(frame: pl.DataFrame, dtypes: dict[str, pl.DataType]) -> pl.DataFrame:
    """`frame` with every column of `dtypes`, null where an older table (or no table at all) lacks it."""
    if frame.width == 0:
        return pl.DataFrame(schema=dtypes)
    missing = [pl.lit(None, dtype).alias(name) for name, dtype in dtypes.items() if name not in frame.columns]
    return frame.with_columns(missing)


def _list_length(frame: pl.DataFrame, column: str) -> pl.Expr:
    return pl.col(column).list.len().fill_null(0) if isinstance(frame.schema.get(column), pl.List) else pl.lit(0, pl.UInt32)


def _segment_mean(frame: pl.DataFrame, field: str) -> pl.Expr:
    """Mean of a segment field over a recording's kept segments; null where segments lack the field."""
    segments = frame.schema.get("segments")
    if not (isinstance(segments, pl.List) and isinstance(segments.inner, pl.Struct)):
        return pl.lit(None, pl.Float64)
    if field not in {f.name for f in segments.inner.fields}:
        return pl.lit(None, pl.Float64)
    return pl.col("segments").list.eval(pl.element().struct.field(field)).list.mean().cast(pl.Float64)


def recording_measures(window: Window) -> pl.DataFrame:
    """One row per transcribed recording: its group, language and numeric metrics, and its kept and dropped
    segment counts (the guard-drop share pools them). Quarantined recordings have no transcript to measure."""
    transcripts = _with_columns(window.transcripts, _TRANSCRIPT_COLUMNS)
    validated = (
        _with_columns(window.validated, _VALIDATED_COLUMNS)
        .select("batch_key", "recording_id", "snr_db", "speech_ratio")
        .unique(["batch_key", "recording_id"], keep="last")
    )
    kept, dropped = _list_length(transcripts, "segments"), _list_length(transcripts, "dropped_segments")
    produced = kept + dropped
    audio, processing = pl.col("audio_seconds"), pl.col("processing_seconds")
    return (
        transcripts.filter(pl.col("status") == STATUS_OK)
        .select(
            "batch_key",
            "recording_id",
            pl.coalesce("transcriber_version", "model", pl.lit(UNKNOWN)).alias("transcriber_version"),
            pl.col("model").fill_null(UNKNOWN),
            pl.col("arm").fill_null(ALL_ARMS),
            pl.col("language").fill_null(UNKNOWN),
            pl.coalesce(pl.col("avg_logprob"), _segment_mean(transcripts, "avg_logprob")).alias("avg_logprob"),
            _segment_mean(transcripts, "no_speech_prob").alias("no_speech_prob"),
            _segment_mean(transcripts, "compression_ratio").alias("compression_ratio"),
            kept.cast(pl.Int64).alias("kept_segments"),
            dropped.cast(pl.Int64).alias("dropped_segments"),
            pl.when(produced > 0).then(dropped / produced).alias("guard_drop_ratio"),
            pl.when(audio > 0).then(pl.col("text").str.count_matches(r"\S+").fill_null(0) / audio).alias("words_per_second"),
            pl.when(processing > 0).then(audio / processing).alias("speed"),
        )
        .join(validated, on=["batch_key", "recording_id"], how="left")
    )


def _psi_of_counts(day: np.ndarray, reference: np.ndarray) -> tuple[float, int]:
    """PSI between two histograms over the same bins, and how many bins held a value on either side."""
    held = (day + reference) > 0
    day, reference = day[held], reference[held]
    n, m = day.sum(), reference.sum()
    p = np.maximum(day / n, 0.5 / n)
    q = np.maximum(reference / m, 0.5 / m)
    return float(((p - q) * np.log(p / q)).sum()), int(held.sum())


def psi(day: np.ndarray, reference: np.ndarray) -> tuple[float, int]:
    """PSI of day values against reference values over bins cut at the reference's deciles, and the bins used."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, BINS + 1)[1:-1]))

    def histogram(values: np.ndarray) -> np.ndarray:
        return np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)

    return _psi_of_counts(histogram(day), histogram(reference))


def category_psi(day: list[str], reference: list[str]) -> tuple[float, int]:
    """PSI over categories (the language mix): each category seen on either side is a bin."""
    categories = sorted(set(day) | set(reference))

    def histogram(values: list[str]) -> np.ndarray:
        return np.array([values.count(category) for category in categories])

    return _psi_of_counts(histogram(day), histogram(reference))


def _chi2_quantile(probability: float, degrees: int) -> float:
    """Wilson–Hilferty's approximation of the χ² quantile (within 1 % here; no SciPy needed)."""
    z = NormalDist().inv_cdf(probability)
    return degrees * (1 - 2 / (9 * degrees) + z * sqrt(2 / (9 * degrees))) ** 3


def psi_noise(n: int, reference_n: int, bins: int) -> float:
    """The PSI an unchanged stream exceeds with probability FALSE_DRIFT_RATE at these sample sizes."""
    if bins < 2:
        return 0.0
    return _chi2_quantile(1 - FALSE_DRIFT_RATE, bins - 1) * (1 / n + 1 / reference_n)


def _drift_row(metric: str, n: int, reference_n: int, mean, reference_mean, measured) -> dict:
    """A distribution metric's row; `measured()` gives (psi, bins) and is called only with enough data."""
    row = {"metric": metric, "n": n, "reference_n": reference_n, "mean": mean, "reference_mean": reference_mean,
           "drifted": False, "alarm": False}
    if min(n, reference_n) < MIN_RECORDINGS:
        return {**row, "status": INSUFFICIENT_DATA}
    value, bins = measured()
    noise = psi_noise(n, reference_n, bins)
    status = DRIFT if value > max(PSI_DRIFT, noise) else WATCH if value > max(PSI_WATCH, noise) else OK
    return {**row, "psi": value, "psi_noise": noise, "status": status, "drifted": status == DRIFT}


def _numeric_row(metric: str, today: pl.Series, before: pl.Series) -> dict:
    today, before = today.drop_nulls().drop_nans(), before.drop_nulls().drop_nans()
    return _drift_row(
        metric, today.len(), before.len(), today.mean(), before.mean(), lambda: psi(today.to_numpy(), before.to_numpy())
    )


def _language_row(today: pl.Series, before: pl.Series) -> dict:
    return _drift_row(LANGUAGE, today.len(), before.len(), None, None, lambda: category_psi(today.to_list(), before.to_list()))


def _share_row(metric: str, n: int, reference_n: int, share: float | None, reference_share: float | None) -> dict:
    """A share's row; a share of nothing (no segments produced at all) is no evidence either way."""
    row = {"metric": metric, "n": n, "reference_n": reference_n, "mean": share, "reference_mean": reference_share,
           "drifted": False, "alarm": False}
    if min(n, reference_n) < MIN_RECORDINGS or share is None or reference_share is None:
        return {**row, "status": INSUFFICIENT_DATA}
    jump = share - reference_share
    alarm = jump > SHARE_JUMP and share >= SHARE_RATIO * reference_share
    return {**row, "jump": jump, "status": ALARM if alarm else OK, "alarm": alarm}


def guard_drop_share(measures: pl.DataFrame) -> float | None:
    """Dropped segments over all segments the model produced (kept + dropped), pooled over recordings."""
    produced = measures["kept_segments"].sum() + measures["dropped_segments"].sum()
    return measures["dropped_segments"].sum() / produced if produced else None


def _quarantine_rows(day: pl.DataFrame, reference: pl.DataFrame) -> list[dict]:
    """The day's share of validated rows quarantined, overall and per reason code."""
    day, reference = (_with_columns(frame, _VALIDATED_COLUMNS) for frame in (day, reference))
    quarantined = pl.col("status") == STATUS_QUARANTINED

    def share(frame: pl.DataFrame, reason: str | None) -> float | None:
        if frame.is_empty():
            return None
        selected = quarantined if reason is None else quarantined & (pl.col("reason") == reason)
        return frame.select(selected.mean()).item()

    reasons = sorted({reason for frame in (day, reference) for reason in frame.filter(quarantined)["reason"].drop_nulls()})
    everything = {"transcriber_version": EVERY_GROUP, "model": EVERY_GROUP, "arm": EVERY_GROUP}
    return [
        {**everything, **_share_row(metric, day.height, reference.height, share(day, reason), share(reference, reason))}
        for metric, reason in [(QUARANTINE_SHARE, None), *((f"{QUARANTINE_SHARE}/{r}", r) for r in reasons)]
    ]


def quality_report(day: Window, reference: Window) -> pl.DataFrame:
    """One row per (model version, arm, metric) of the day against the same group in the reference window,
    then the day-wide quarantine shares (schema: REPORT_SCHEMA)."""
    today, before = recording_measures(day), recording_measures(reference)
    rows = []
    for (version, arm), group in sorted(today.group_by(GROUP), key=lambda item: item[0]):
        past = before.filter((pl.col("transcriber_version") == version) & (pl.col("arm") == arm))
        label = {"transcriber_version": version, "model": group["model"][0], "arm": arm}
        rows += [{**label, **_numeric_row(metric, group[metric], past[metric])} for metric in NUMERIC_METRICS]
        rows.append({**label, **_language_row(group[LANGUAGE], past[LANGUAGE])})
        drop_shares = guard_drop_share(group), guard_drop_share(past)
        rows.append({**label, **_share_row(GUARD_DROP_SHARE, group.height, past.height, *drop_shares)})
    rows += _quarantine_rows(day.validated, reference.validated)
    return pl.DataFrame(rows, schema=REPORT_SCHEMA)


def baseline_group(measures: pl.DataFrame) -> tuple[str, str] | None:
    """The group whose PSIs the UI plots day after day: the model version with most of the day's recordings in
    the baseline arm (in any arm when none is called baseline); None on a day with no transcript."""
    in_baseline = measures.filter(pl.col("arm") == BASELINE_ARM)
    candidates = in_baseline if not in_baseline.is_empty() else measures
    if candidates.is_empty():
        return None
    largest = candidates.group_by(GROUP).len().sort(["len", *GROUP], descending=[True, False, False])
    return largest["transcriber_version"][0], largest["arm"][0]


@dataclass(frozen=True)
class _Estimate:
    n: int
    value: float
    variance: float  # of `value`


def _mean(values: pl.Series) -> _Estimate:
    return _Estimate(values.len(), float(values.mean()), float(values.var()) / values.len())


def _pooled_share(arm: pl.DataFrame) -> _Estimate | None:
    """Dropped over produced segments, pooled, with the ratio estimator's variance: segments of one recording
    are not independent, so the spread is taken over recordings (e_i = d_i − R·t_i), not over segments."""
    dropped = arm["dropped_segments"].cast(pl.Float64).to_numpy()
    produced = dropped + arm["kept_segments"].cast(pl.Float64).to_numpy()
    if not produced.sum():
        return None
    n, share = len(produced), dropped.sum() / produced.sum()
    residuals = dropped - share * produced
    return _Estimate(n, float(share), float((residuals**2).sum() / (n * (n - 1) * produced.mean() ** 2)))


def _difference(metric: str, baseline: _Estimate, candidate: _Estimate) -> dict:
    delta = candidate.value - baseline.value
    margin = NormalDist().inv_cdf(0.5 + CONFIDENCE / 2) * sqrt(baseline.variance + candidate.variance)
    return {"metric": metric, "baseline_n": baseline.n, "candidate_n": candidate.n, "baseline": baseline.value,
            "candidate": candidate.value, "delta": delta, "ci_low": delta - margin, "ci_high": delta + margin}


def ab_comparison(measures: pl.DataFrame) -> pl.DataFrame:
    """Candidate minus baseline arm on one day (schema: AB_SCHEMA): the mean log-probability and the guard-drop
    share, each with a 95 % interval. The arms hold different recordings, so the interval is Welch's (unpaired,
    unequal variances) with the normal quantile, 1.96, instead of Student's t: at the 20 recordings an arm
    needs at least, t's would be about 3 % wider. Empty unless both arms have MIN_RECORDINGS recordings."""
    baseline, candidate = (measures.filter(pl.col("arm") == arm) for arm in (BASELINE_ARM, CANDIDATE_ARM))
    logprobs = [arm["avg_logprob"].drop_nulls() for arm in (baseline, candidate)]
    if min(baseline.height, candidate.height, *(values.len() for values in logprobs)) < MIN_RECORDINGS:
        return pl.DataFrame(schema=AB_SCHEMA)
    rows = [_difference("avg_logprob", _mean(logprobs[0]), _mean(logprobs[1]))]
    shares = _pooled_share(baseline), _pooled_share(candidate)
    if None not in shares:
        rows.append(_difference(GUARD_DROP_SHARE, *shares))
    return pl.DataFrame(rows, schema=AB_SCHEMA)
