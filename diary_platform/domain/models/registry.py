"""The model registry: which transcription and note-writing models the platform may use, which one is the
baseline, which are candidates for promotion, and the record of promotions.

The registry is a small YAML file (`DIARY_MODEL_REGISTRY`, `config/model_registry.example.yaml`):

    transcription:            # id: the name rows are to record
      - {id: tiny-en-int8, model: bundled, compute_type: int8, beam_size: 1}
      - {id: tiny-en-int8-beam5, model: bundled, compute_type: int8, beam_size: 5}
    notes:
      - {id: gpt-4o-mini, provider: openai, model: gpt-4o-mini}
    baseline: {transcription: tiny-en-int8}
    candidates: {transcription: [tiny-en-int8-beam5]}
    promotion: {max_wer_increase: 0.01}
    golden_sets: []           # extra manifest.jsonl files, relative to the registry file

A transcription entry overrides only what it names of the platform's transcriber settings (DIARY_MODEL,
DIARY_COMPUTE_TYPE, ...), like a rule of the transcription policy; its fingerprint is the hash of the
transcriber `code_version` (the same hash transcripts rows keep as `transcriber_version`), so two ids with
the same settings have the same fingerprint. Without a file the registry holds one transcription model,
`default`: the platform's settings, as baseline, with no candidates.

Promotions (`promote_model`) are kept in the shared state, newest last: the baseline in force is the latest
promotion of a kind whose model is still registered, else the file's baseline.
"""

import hashlib
import json
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from diary_platform.domain.speech.transcription import Packing, TranscriberConfig, code_version
from diary_platform.domain.store.layout import write_text_atomic

if TYPE_CHECKING:  # state_database.py holds the promotions table's migration; shared_state.py builds the stores
    from diary_platform.domain.state_database import StateDatabase

TRANSCRIPTION, NOTES = "transcription", "notes"
KINDS = (TRANSCRIPTION, NOTES)
Kind = Literal["transcription", "notes"]
DEFAULT_MODEL = "default"
MODEL_ID = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class RegistryError(ValueError):
    """The registry file cannot be used; the message names the file and the key."""


class _Transcription(BaseModel):
    """What a transcription model changes of the platform's transcriber settings (the rest stays as configured)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=MODEL_ID)
    model: str | None = None
    compute_type: str | None = None
    beam_size: int | None = Field(None, ge=1, le=16)
    batch_size: int | None = Field(None, ge=1, le=256)
    batched: bool | None = None
    vad_filter: bool | None = None
    packing: Packing | None = None

    def overrides(self) -> dict:
        return {k: v for k, v in self.model_dump(exclude={"id"}).items() if v is not None}


class _Notes(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=MODEL_ID)
    provider: str = Field(min_length=1)
    model: str = Field(min_length=1)


class _Baseline(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    transcription: str | None = None
    notes: str | None = None


class _Candidates(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    transcription: list[str] = []
    notes: list[str] = []


class _Promotion(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_wer_increase: float = Field(0.01, ge=0, le=1)


class _Experiment(BaseModel):
    """An A/B test: a stable `share` of users gets `candidate` instead of the baseline, from `start` until `stop`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=MODEL_ID)
    kind: Kind
    candidate: str
    share: float = Field(gt=0, le=1)
    start: datetime | None = None
    stop: datetime | None = None

    @model_validator(mode="after")
    def _window_is_ordered(self) -> "_Experiment":
        for moment in (self.start, self.stop):
            if moment is not None and moment.tzinfo is None:
                raise ValueError("start and stop need a time zone (e.g. 2026-12-01T00:00:00Z)")
        if self.start and self.stop and self.stop <= self.start:
            raise ValueError("stop must come after start")
        return self


class _RegistryFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    transcription: list[_Transcription] = []
    notes: list[_Notes] = []
    baseline: _Baseline = _Baseline()
    candidates: _Candidates = _Candidates()
    promotion: _Promotion = _Promotion()
    golden_sets: list[Path] = []
    experiments: list[_Experiment] = []

    @model_validator(mode="after")
    def _roles_name_registered_models(self) -> "_RegistryFile":
        for kind in KINDS:
            ids = [entry.id for entry in getattr(self, kind)]
            if len(set(ids)) != len(ids):
                raise ValueError(f"{kind}: model ids must be unique")
            baseline, candidates = getattr(self.baseline, kind), getattr(self.candidates, kind)
            if ids and baseline is None:
                raise ValueError(f"baseline.{kind}: required when {kind} models are registered")
            if baseline is not None and baseline not in ids:
                raise ValueError(f"baseline.{kind}: {baseline!r} is not a registered {kind} model ({', '.join(ids) or 'none'})")
            for candidate in candidates:
                if candidate not in ids:
                    raise ValueError(f"candidates.{kind}: {candidate!r} is not a registered {kind} model ({', '.join(ids) or 'none'})")
                if candidate == baseline:
                    raise ValueError(f"candidates.{kind}: {candidate!r} is the baseline")
        for index, experiment in enumerate(self.experiments):
            ids = [entry.id for entry in getattr(self, experiment.kind)]
            if experiment.candidate not in ids:
                raise ValueError(f"experiments.{index}.candidate: {experiment.candidate!r} is not a registered {experiment.kind} model")
            if experiment.candidate == getattr(self.baseline, experiment.kind):
                raise ValueError(f"experiments.{index}.candidate: {experiment.candidate!r} is the baseline")
        kinds = [experiment.kind for experiment in self.experiments]
        if len(set(kinds)) != len(kinds):
            raise ValueError("experiments: one experiment per kind at a time (transcription, notes)")
        return self


def fingerprint(config: TranscriberConfig) -> str:
    """The hash of everything that decides a transcript (transcription.code_version); rows keep it as `transcriber_version`."""
    return hashlib.sha256(code_version(config).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TranscriptionModel:
    id: str
    config: TranscriberConfig

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.config)


@dataclass(frozen=True)
class NotesModel:
    id: str
    provider: str
    model: str


@dataclass(frozen=True)
class Experiment:
    """An A/B test of `kind`: users whose stable hash with the experiment's id falls under `share` get
    `candidate` while the experiment runs (assignment.py)."""

    id: str
    kind: str
    candidate: str
    share: float
    start: datetime | None = None
    stop: datetime | None = None

    def running(self, now: datetime) -> bool:
        return (self.start is None or self.start <= now) and (self.stop is None or now < self.stop)


@dataclass(frozen=True)
class ModelPromotion:
    """A model made the baseline of its kind: by whom, when, instead of which, on what evidence."""

    kind: str
    model_id: str
    previous_id: str | None
    promoted_by: str
    promoted_at: datetime
    evidence: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "promoted_at": self.promoted_at.isoformat()}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelPromotion":
        raw = json.loads(text)
        return cls(**{**raw, "promoted_at": datetime.fromisoformat(raw["promoted_at"])})


class ModelPromotions(Protocol):
    def add(self, promotion: ModelPromotion) -> None: ...

    def latest(self, kind: str) -> ModelPromotion | None:
        """The newest promotion of that kind."""
        ...

    def all(self, kind: str) -> list[ModelPromotion]:
        """Every promotion of that kind, oldest first."""
        ...


class FileModelPromotions(ModelPromotions):
    """One JSON file per promotion, named by its time (and a random tail, so two never collide)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def add(self, promotion: ModelPromotion) -> None:
        name = f"{promotion.kind}-{promotion.promoted_at.strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:8]}.json"
        write_text_atomic(self.root / name, promotion.to_json())

    def all(self, kind: str) -> list[ModelPromotion]:
        paths = self.root.glob(f"{kind}-*.json") if self.root.exists() else []
        records = [(ModelPromotion.from_json(path.read_text()), path.name) for path in paths]
        return [promotion for promotion, _ in sorted(records, key=lambda r: (r[0].promoted_at, r[1]))]

    def latest(self, kind: str) -> ModelPromotion | None:
        promotions = self.all(kind)
        return promotions[-1] if promotions else None


class PostgresModelPromotions(ModelPromotions):
    """One row per promotion in `diary_model_promotions`; the newest of a kind is an index scan."""

    def __init__(self, database: "StateDatabase"):
        self.database = database

    def add(self, promotion: ModelPromotion) -> None:
        self.database.execute(
            "INSERT INTO diary_model_promotions (kind, model_id, promoted_at, record)"
            " VALUES (:kind, :model_id, :promoted_at, CAST(:record AS jsonb))",
            kind=promotion.kind, model_id=promotion.model_id, promoted_at=promotion.promoted_at, record=promotion.to_json(),
        )

    def all(self, kind: str) -> list[ModelPromotion]:
        rows = self.database.rows(
            "SELECT record FROM diary_model_promotions WHERE kind = :kind ORDER BY promoted_at, id", kind=kind
        )
        return [_from_row(row.record) for row in rows]

    def latest(self, kind: str) -> ModelPromotion | None:
        rows = self.database.rows(
            "SELECT record FROM diary_model_promotions WHERE kind = :kind ORDER BY promoted_at DESC, id DESC LIMIT 1", kind=kind
        )
        return _from_row(rows[0].record) if rows else None


def _from_row(record) -> ModelPromotion:
    return ModelPromotion.from_json(record if isinstance(record, str) else json.dumps(record))


@dataclass(frozen=True)
class Registry:
    transcription: dict[str, TranscriptionModel]
    notes: dict[str, NotesModel]
    baselines: dict[str, str]  # kind -> the file's baseline id
    candidates: dict[str, tuple[str, ...]]  # kind -> candidate ids, in the file's order
    max_wer_increase: float = 0.01
    golden_sets: tuple[Path, ...] = ()
    source: Path | None = None
    experiments: tuple[Experiment, ...] = ()

    def experiment(self, kind: str) -> "Experiment | None":
        return next((e for e in self.experiments if e.kind == kind), None)

    def models(self, kind: str) -> dict[str, TranscriptionModel] | dict[str, NotesModel]:
        if kind not in KINDS:
            raise KeyError(f"unknown model kind {kind!r} (kinds: {', '.join(KINDS)})")
        return getattr(self, kind)

    def baseline(self, kind: str, promotions: ModelPromotions | None = None) -> str | None:
        """The baseline in force: the latest promotion of `kind` whose model is still registered, else the file's."""
        models = self.models(kind)
        for promotion in reversed(promotions.all(kind) if promotions is not None else []):
            if promotion.model_id in models:
                return promotion.model_id
        return self.baselines.get(kind)

    def evaluated(self, promotions: ModelPromotions | None = None) -> list[TranscriptionModel]:
        """The transcription models an evaluation runs: the baseline in force first, then every other candidate."""
        baseline = self.baseline(TRANSCRIPTION, promotions)
        ids = [baseline, *(c for c in self.candidates.get(TRANSCRIPTION, ()) if c != baseline)]
        return [self.transcription[model_id] for model_id in ids]

    def version(self) -> str:
        """Changes with the file's baseline and candidates (ids and fingerprints) and the golden sets: for the
        evaluation asset's code version. Not in it: the margin (the gate applies it to the stored evaluation) and
        the promotions (they live in the shared state)."""
        ids = [self.baselines.get(TRANSCRIPTION), *self.candidates.get(TRANSCRIPTION, ())]
        parts = [(model_id, self.transcription[model_id].fingerprint) for model_id in ids if model_id]
        return hashlib.sha256(repr((parts, [str(p) for p in self.golden_sets])).encode()).hexdigest()[:12]


def default_registry(base: TranscriberConfig) -> Registry:
    """No file: the platform's own settings as the one transcription model, `default`, and the baseline."""
    return Registry(
        transcription={DEFAULT_MODEL: TranscriptionModel(DEFAULT_MODEL, base)},
        notes={},
        baselines={TRANSCRIPTION: DEFAULT_MODEL},
        candidates={TRANSCRIPTION: (), NOTES: ()},
    )


def load_registry(path: Path | None, base: TranscriberConfig) -> Registry:
    """The registry of `path` over the platform's transcriber settings `base`; the default one without a file."""
    if path is None:
        return default_registry(base)
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as error:
        raise RegistryError(f"{path}: cannot be read ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise RegistryError(f"{path}: not valid YAML: {error}") from None
    try:
        parsed = _RegistryFile.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'registry'}: {e['msg']}" for e in error.errors())
        raise RegistryError(f"{path}: {problems}") from None
    golden_sets = tuple((path.parent / p).expanduser().resolve() for p in parsed.golden_sets)
    for index, manifest in enumerate(golden_sets):
        if not manifest.is_file():
            raise RegistryError(f"{path}: golden_sets.{index}: {manifest} is not a file")
    transcription = {e.id: TranscriptionModel(e.id, replace(base, **e.overrides())) for e in parsed.transcription}
    baselines = {kind: getattr(parsed.baseline, kind) for kind in KINDS if getattr(parsed.baseline, kind)}
    registry = Registry(
        transcription=transcription,
        notes={e.id: NotesModel(e.id, e.provider, e.model) for e in parsed.notes},
        baselines=baselines,
        candidates={kind: tuple(getattr(parsed.candidates, kind)) for kind in KINDS},
        max_wer_increase=parsed.promotion.max_wer_increase,
        golden_sets=golden_sets,
        source=path,
        experiments=tuple(Experiment(e.id, e.kind, e.candidate, e.share, e.start, e.stop) for e in parsed.experiments),
    )
    if not transcription:  # notes only: transcription stays the platform's own settings
        default = default_registry(base)
        registry = replace(registry, transcription=default.transcription, baselines={**default.baselines, **baselines})
    return registry
