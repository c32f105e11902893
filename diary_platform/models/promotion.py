"""`promote_model`: make a transcription candidate the baseline, launched from the Launchpad with
`{model_id, promoted_by}`. It refuses unless the latest `model_evaluation` passed `candidate_not_worse`,
evaluated the registry's current baseline and the candidate with their current settings, and found the
candidate's WER within the margin; then it records the promotion (who, when, both WERs) in the shared state.

What a promotion changes downstream (transcripts made stale) is not part of this job yet.
"""

from dataclasses import dataclass
from datetime import datetime, timezone

import dagster as dg
from pydantic import Field

from diary_platform.domain.models.evaluation import MODEL_EVALUATION
from diary_platform.domain.models.registry import TRANSCRIPTION, ModelPromotion, ModelPromotions, Registry
from diary_platform.models.model_evaluation import CANDIDATE_NOT_WORSE, ModelRegistryResource
from diary_platform.batch.transcripts import CURRENT_MODELS, stale_recordings
from diary_platform.domain import catalog
from diary_platform.resources import StoreResource, WhisperTranscriber


class PromotionRefused(Exception):
    """The promotion is not allowed; the message says why and what to do."""


@dataclass(frozen=True)
class Evaluation:
    """What the latest `model_evaluation` materialization found, read back from its event."""

    run_id: str
    baseline: str
    models: dict[str, dict]  # model id -> {fingerprint, wer, real_time_factor}
    gate_passed: bool | None  # None: no result of the check for this materialization
    gate_said: str = ""  # what the check's metadata says against it


def decide(registry: Registry, promotions: ModelPromotions, evaluation: Evaluation | None, model_id: str, promoted_by: str) -> ModelPromotion:
    """The promotion of `model_id`, or PromotionRefused with the reason."""
    candidates = registry.candidates.get(TRANSCRIPTION, ())
    if not promoted_by.strip():
        raise PromotionRefused("promoted_by is empty: say who promotes the model")
    if model_id not in candidates:
        raise PromotionRefused(
            f"{model_id!r} is not a registered transcription candidate (candidates: {', '.join(candidates) or 'none'})"
        )
    baseline = registry.baseline(TRANSCRIPTION, promotions)
    if model_id == baseline:
        raise PromotionRefused(f"{model_id!r} is already the baseline")
    if evaluation is None:
        raise PromotionRefused(f"{MODEL_EVALUATION} has never been materialized: materialize it, then promote")
    if evaluation.gate_passed is None:
        raise PromotionRefused(f"the latest {MODEL_EVALUATION} (run {evaluation.run_id}) has no result of {CANDIDATE_NOT_WORSE}")
    if not evaluation.gate_passed:
        raise PromotionRefused(
            f"{CANDIDATE_NOT_WORSE} failed on the latest {MODEL_EVALUATION} (run {evaluation.run_id}; {evaluation.gate_said}): "
            "no promotion until it passes"
        )
    if evaluation.baseline != baseline:
        raise PromotionRefused(
            f"the latest {MODEL_EVALUATION} (run {evaluation.run_id}) measured against {evaluation.baseline!r}, but the baseline "
            f"is now {baseline!r}: materialize {MODEL_EVALUATION} again"
        )
    for needed in (baseline, model_id):
        measured = evaluation.models.get(needed)
        if measured is None or measured.get("fingerprint") != registry.transcription[needed].fingerprint:
            raise PromotionRefused(
                f"the latest {MODEL_EVALUATION} (run {evaluation.run_id}) did not measure {needed!r} with its current "
                f"settings: materialize {MODEL_EVALUATION} again"
            )
    candidate_wer, baseline_wer = evaluation.models[model_id]["wer"], evaluation.models[baseline]["wer"]
    margin = registry.max_wer_increase
    if candidate_wer > baseline_wer + margin + 1e-12:
        raise PromotionRefused(
            f"{model_id!r} has WER {candidate_wer:.4f}, more than the baseline {baseline!r}'s {baseline_wer:.4f} + {margin}"
        )
    return ModelPromotion(
        kind=TRANSCRIPTION,
        model_id=model_id,
        previous_id=baseline,
        promoted_by=promoted_by.strip(),
        promoted_at=datetime.now(timezone.utc),
        evidence={
            "candidate_wer": candidate_wer,
            "baseline_wer": baseline_wer,
            "max_wer_increase": margin,
            "candidate_fingerprint": evaluation.models[model_id]["fingerprint"],
            "baseline_fingerprint": evaluation.models[baseline]["fingerprint"],
            "evaluation_run_id": evaluation.run_id,
        },
    )


def latest_evaluation(instance: dg.DagsterInstance) -> Evaluation | None:
    """The latest materialization of `model_evaluation` and the result of its check, from the event log."""
    key = dg.AssetKey(MODEL_EVALUATION)
    records = instance.fetch_materializations(key, limit=1).records
    if not records or records[0].asset_materialization is None:
        return None
    event = records[0]
    metadata = event.asset_materialization.metadata
    record = instance.get_latest_asset_check_evaluation_record(dg.AssetCheckKey(key, CANDIDATE_NOT_WORSE))
    check = record.event.dagster_event.asset_check_evaluation_data if record and record.event and record.event.dagster_event else None
    target = check.target_materialization_data if check is not None else None
    of_this = target is not None and target.storage_id == event.storage_id  # the check judged this very evaluation
    said = {name: check.metadata[name].value for name in ("worse", "not_measured", "max_wer_increase") if of_this and name in check.metadata}
    return Evaluation(
        run_id=event.run_id,
        baseline=metadata["baseline"].value,
        models=dict(metadata["models"].value),
        gate_passed=check.passed if of_this else None,
        gate_said=(f"worse than the baseline by more than {said.get('max_wer_increase')}: {said.get('worse')}; "
                   f"not measured with their current settings: {said.get('not_measured')}"),
    )


def report_stale_transcripts(instance: dg.DagsterInstance, whisper: WhisperTranscriber, store: StoreResource, promotion: ModelPromotion) -> dict[str, int]:
    """Fail `current_models` for every batch the promotion leaves behind, so that the UI shows which transcripts
    partitions to backfill with `retranscribe`; batch key -> its stale recordings."""
    stale = stale_recordings(whisper, store, store.catalog.every_batch(catalog.TRANSCRIPTS), promotion.promoted_at)
    for key, count in stale.items():
        instance.report_runless_asset_event(dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey(catalog.TRANSCRIPTS), check_name=CURRENT_MODELS, passed=False, partition=key,
            severity=dg.AssetCheckSeverity.WARN, metadata={"stale_recordings": count, "promoted": promotion.model_id},
        ))
    return stale


class PromotionConfig(dg.Config):
    model_id: str = Field(description="The transcription candidate to make the baseline (an id of the model registry).")
    promoted_by: str = Field(description="Who promotes it; recorded with the promotion.")


@dg.op(description="Records the promotion of a transcription candidate that the latest model evaluation allows.")
def promote(context: dg.OpExecutionContext, config: PromotionConfig, store: StoreResource, model_registry: ModelRegistryResource) -> None:
    promotions = store.shared_state.model_promotions
    try:
        promotion = decide(model_registry.registry(), promotions, latest_evaluation(context.instance), config.model_id, config.promoted_by)
    except PromotionRefused as refused:
        raise dg.Failure(description=f"promotion refused: {refused}", allow_retries=False) from None
    promotions.add(promotion)
    stale = report_stale_transcripts(context.instance, model_registry.whisper, store, promotion)
    context.log.info(f"{len(stale)} batch(es) transcribed by the previous baseline: backfill `retranscribe` over them ({', '.join(sorted(stale)[:20])})")
    evidence = promotion.evidence
    context.log.info(
        f"{promotion.model_id} is the {promotion.kind} baseline (was {promotion.previous_id}), promoted by {promotion.promoted_by} "
        f"at {promotion.promoted_at.isoformat()}: WER {evidence['candidate_wer']:.4f} against {evidence['baseline_wer']:.4f} "
        f"(margin {evidence['max_wer_increase']}, evaluation run {evidence['evaluation_run_id']})"
    )


@dg.job(
    description=(
        "Make a transcription candidate the baseline ({model_id, promoted_by}), if the latest model_evaluation passed "
        "candidate_not_worse and measured it within the margin; recorded in the shared state."
    )
)
def promote_model():
    promote()
