"""`model_evaluation`: the baseline transcription model and every candidate of the registry measured on the
golden set (WER, real-time factor, memory), with `candidate_not_worse`, the gate `promote_model` requires."""

from pathlib import Path

import dagster as dg
import polars as pl

from diary_platform.domain.models.evaluation import MODEL_EVALUATION, SCHEMA, evaluate, golden_references, promotion_gate
from diary_platform.domain.models.registry import TRANSCRIPTION, Registry, load_registry
from diary_platform.k8s import step_tags
from diary_platform.resources import StoreResource, WhisperTranscriber
from diary_platform.settings import Settings

CANDIDATE_NOT_WORSE = "candidate_not_worse"
# The labelled clips committed with the tests; a Docker image holds no tests, so they may be absent.
COMMITTED_CLIPS = Path(__file__).resolve().parents[2] / "diary_platform_tests" / "data" / "manifest.jsonl"
LATEST = "latest"


class ModelRegistryResource(dg.ConfigurableResource):
    """The model registry file (DIARY_MODEL_REGISTRY) over the platform's transcriber settings; none: the
    platform's settings are the one model, `default`."""

    registry_file: str | None
    whisper: WhisperTranscriber

    def registry(self) -> Registry:
        return load_registry(Path(self.registry_file) if self.registry_file else None, self.whisper.settings())


def markdown(table: pl.DataFrame, baseline: str) -> str:
    lines = ["| model | fingerprint | WER | real-time factor | load s | peak RSS MB |", "|---|---|---|---|---|---|"]
    for row in table.iter_rows(named=True):
        name = f"**{row['model_id']}** (baseline)" if row["model_id"] == baseline else row["model_id"]
        lines.append(f"| {name} | `{row['fingerprint']}` | {row['wer']:.4f} | {row['real_time_factor']:.4f} "
                     f"| {row['load_seconds']:.2f} | {row['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def model_evaluation_asset(settings: Settings) -> dg.AssetsDefinition:
    registry = load_registry(settings.model_registry, settings.transcriber)

    @dg.asset(
        name=MODEL_EVALUATION,
        group_name="models",
        kinds={"polars", "parquet"},
        op_tags=step_tags(settings, MODEL_EVALUATION),
        code_version=f"model-evaluation-v1|{registry.version()}",
        description=(
            "The baseline transcription model and every candidate of the model registry (DIARY_MODEL_REGISTRY) on the "
            "golden set: the committed labelled clips and the registry's golden_sets. Per model: corpus WER (Whisper's "
            "English normaliser), real-time factor, load time, peak memory growth."
        ),
    )
    def model_evaluation(
        context: dg.AssetExecutionContext, store: StoreResource, model_registry: ModelRegistryResource
    ) -> dg.MaterializeResult:
        registry = model_registry.registry()
        promotions = store.shared_state.model_promotions
        baseline = registry.baseline(TRANSCRIPTION, promotions)
        models = registry.evaluated(promotions)
        manifests = list(registry.golden_sets)
        if COMMITTED_CLIPS.is_file():
            manifests.insert(0, COMMITTED_CLIPS)
        else:
            context.log.info(f"the committed clips ({COMMITTED_CLIPS}) are not here (no tests in this image): golden_sets only")
        references = golden_references(manifests)
        if not references:
            raise dg.Failure(description="no golden clips: the committed clips are absent and the registry lists no golden_sets",
                             allow_retries=False)
        context.log.info(f"evaluating {', '.join(m.id for m in models)} on {len(references)} clips of {len(manifests)} manifest(s)")
        table = evaluate([(m.id, m.config) for m in models], references)
        written = store.store.write_table(MODEL_EVALUATION, LATEST, table)
        rows = list(table.iter_rows(named=True))
        return dg.MaterializeResult(
            metadata={
                "evaluation": dg.MetadataValue.md(markdown(table, baseline)),
                "baseline": baseline,
                **{f"wer/{row['model_id']}": round(row["wer"], 6) for row in rows},
                **{f"rtf/{row['model_id']}": round(row["real_time_factor"], 6) for row in rows},
                "models": dg.MetadataValue.json(
                    {row["model_id"]: {"fingerprint": row["fingerprint"], "wer": row["wer"], "real_time_factor": row["real_time_factor"]}
                     for row in rows}
                ),
                "clips": int(table["clips"][0]),
                "audio_seconds": round(float(table["audio_seconds"][0]), 3),
                "dagster/row_count": table.height,
                "path": dg.MetadataValue.path(written.uri),
            }
        )

    return model_evaluation


@dg.asset_check(
    asset=MODEL_EVALUATION,
    name=CANDIDATE_NOT_WORSE,
    blocking=False,
    description=(
        "The promotion gate: the latest evaluation measured the baseline and every candidate with their current "
        "settings, and no candidate's WER exceeds the baseline's by more than the registry's promotion.max_wer_increase. "
        "Runs after each evaluation; run it alone after changing the margin or the candidates."
    ),
)
def candidate_not_worse(store: StoreResource, model_registry: ModelRegistryResource) -> dg.AssetCheckResult:
    registry = model_registry.registry()
    promotions = store.shared_state.model_promotions
    baseline = registry.baseline(TRANSCRIPTION, promotions)
    expected = {model.id: model.fingerprint for model in registry.evaluated(promotions)}
    data = store.store
    table = data.read_table(MODEL_EVALUATION, LATEST) if data.has_table(MODEL_EVALUATION, LATEST) else pl.DataFrame(schema=SCHEMA)
    verdict = promotion_gate(table, expected, baseline, registry.max_wer_increase)
    return dg.AssetCheckResult(
        passed=verdict.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "baseline": baseline,
            "baseline_wer": round(verdict.baseline_wer, 6) if verdict.baseline_wer is not None else None,
            "max_wer_increase": verdict.max_wer_increase,
            **{f"delta/{candidate}": round(delta, 6) for candidate, delta in verdict.deltas.items()},
            "worse": ", ".join(verdict.worse) or "none",
            "not_measured": ", ".join(verdict.unmeasured) or "none",
        },
    )
