"""`note_quality`: each registered note-writing model, and the platform's own route, writing notes for the
golden set's references; the share of stated facts their cited segments do not back, and the key facts
mentioned (domain/models/note_quality.py). The WARN check `notes_supported` fails past 10 % unsupported."""

import dagster as dg
import polars as pl

from diary_platform import metadata
from diary_platform.domain.models.evaluation import golden_references
from diary_platform.domain.models.note_quality import NOTE_QUALITY, evaluate_notes, golden_note
from diary_platform.k8s import step_tags
from diary_platform.models.model_evaluation import COMMITTED_CLIPS, LATEST, ModelRegistryResource
from diary_platform.resources import NoteWriterResource, StoreResource
from diary_platform.settings import Settings

OWN_ROUTE = "route"
MAX_UNSUPPORTED_SHARE = 0.10


def note_quality_asset(settings: Settings) -> dg.AssetsDefinition:
    @dg.asset(
        name=NOTE_QUALITY,
        group_name="models",
        kinds={"polars"},
        op_tags=step_tags(settings, NOTE_QUALITY),
        description=(
            "Notes written for the golden set's reference transcripts by each note-writing model of the registry "
            "(and the platform's own route): the share of facts whose cited segment does not back them, and the "
            "reference's key facts mentioned."
        ),
    )
    def note_quality(
        context: dg.AssetExecutionContext, store: StoreResource, model_registry: ModelRegistryResource, note_writer: NoteWriterResource
    ) -> dg.MaterializeResult:
        registry = model_registry.registry()
        manifests = [COMMITTED_CLIPS, *registry.golden_sets] if COMMITTED_CLIPS.is_file() else list(registry.golden_sets)
        golden = [golden_note(r.path.name, r.text, r.facts) for r in golden_references(manifests)]
        if not golden:
            raise dg.Failure(description="no golden clips: the committed clips are absent and the registry lists no golden_sets",
                             allow_retries=False)
        models = {OWN_ROUTE: None, **{m.id: (m.provider, m.model) for m in registry.notes.values()}}
        table = evaluate_notes(note_writer.build().write, models, golden)
        written = store.store.write_table(NOTE_QUALITY, LATEST, table)
        rows = list(table.iter_rows(named=True))
        return dg.MaterializeResult(metadata={
            "report": metadata.table(table.drop("unsupported_examples"), rounding=4),
            **{f"unsupported_share/{row['model_id']}": round(row["unsupported_share"], 4) for row in rows},
            **{f"facts_mentioned/{row['model_id']}": round(row["facts_mentioned"], 4) for row in rows if row["facts_mentioned"] is not None},
            "dagster/row_count": table.height,
            "path": dg.MetadataValue.path(written.uri),
        })

    return note_quality


@dg.asset_check(
    asset=NOTE_QUALITY,
    name="notes_supported",
    description=f"No note-writing model states more than {MAX_UNSUPPORTED_SHARE:.0%} of its facts without a segment that backs them.",
)
def notes_supported(store: StoreResource) -> dg.AssetCheckResult:
    table = store.catalog.batch(NOTE_QUALITY, LATEST)
    worse = table.filter(pl.col("unsupported_share") > MAX_UNSUPPORTED_SHARE)
    return dg.AssetCheckResult(
        passed=worse.is_empty(),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "models_over": ", ".join(f"{r['model_id']} ({r['unsupported_share']:.0%}: {r['unsupported_examples']})" for r in worse.iter_rows(named=True)) or "none",
        },
    )
