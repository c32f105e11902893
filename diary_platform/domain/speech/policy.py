"""Which transcription settings a recording gets: rules on its priority tag and its duration.

The policy is a small YAML file (`DIARY_TRANSCRIPTION_POLICY`); the first rule whose `when` matches
a recording decides, and a recording no rule matches keeps the configured settings. A rule's `use`
overrides only what it names: model (the bundled one, any CTranslate2 Whisper model folder or a name
in the local cache), compute type, beam size, batch size and packing.

    rules:
      - name: urgent-accurate
        when: {priority: [urgent]}
        use: {model: /models/whisper-small.en, beam_size: 5}
      - name: long-talks
        when: {min_seconds: 1800}
        use: {batch_size: 4}

The priority tag of an upload is the name of the folder just below the user's in the landing folder
(`landing/<user>/<tag>/<file>`); a file directly in the user's folder has none.
"""

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import polars as pl
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from diary_platform.domain.schemas import STATUS_OK
from diary_platform.domain.speech.transcription import Packing, TranscriberConfig, code_version

DEFAULT_RULE = "default"


class PolicyError(ValueError):
    """The policy file cannot be used; the message names the file and the key."""


class _Match(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    priority: list[str] | None = None
    min_seconds: float = Field(0.0, ge=0)
    max_seconds: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _band_is_ordered(self) -> "_Match":
        if self.max_seconds is not None and self.max_seconds <= self.min_seconds:
            raise ValueError("max_seconds must be above min_seconds")
        return self

    def matches(self, priority: str | None, seconds: float) -> bool:
        in_band = self.min_seconds <= seconds and (self.max_seconds is None or seconds < self.max_seconds)
        return in_band and (self.priority is None or priority in self.priority)


class _Use(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str | None = None
    compute_type: str | None = None
    beam_size: int | None = Field(None, ge=1, le=16)
    batch_size: int | None = Field(None, ge=1, le=256)
    packing: Packing | None = None


class _Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    when: _Match = _Match()
    use: _Use


class _PolicyFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: list[_Rule] = []

    @model_validator(mode="after")
    def _names_are_unique(self) -> "_PolicyFile":
        names = [rule.name for rule in self.rules]
        if len(set(names)) != len(names) or DEFAULT_RULE in names:
            raise ValueError(f"rule names must be unique and not {DEFAULT_RULE!r}")
        return self


@dataclass(frozen=True)
class Choice:
    """The settings one recording is transcribed with, the rule that chose them, and their code version."""

    rule: str
    config: TranscriberConfig
    version: str


class TranscriptionPolicy:
    def __init__(self, base: TranscriberConfig, rules: list[_Rule] | None = None):
        self.base = base
        self.rules = rules or []

    def choose(self, priority: str | None, seconds: float) -> Choice:
        for rule in self.rules:
            if rule.when.matches(priority, seconds):
                overrides = {k: v for k, v in rule.use.model_dump().items() if v is not None}
                return _choice(rule.name, replace(self.base, **overrides))
        return _choice(DEFAULT_RULE, self.base)

    def on(self, base: TranscriberConfig) -> "TranscriptionPolicy":
        """The same rules over other base settings: those of the model a recording's A/B arm gets."""
        return TranscriptionPolicy(base, self.rules)

    def version(self) -> str:
        """Changes with the base settings or any rule: for the asset's code version."""
        rules = [rule.model_dump() for rule in self.rules]
        return hashlib.sha256(repr((asdict(self.base), rules)).encode()).hexdigest()[:12]


def _choice(rule: str, config: TranscriberConfig) -> Choice:
    return Choice(rule, config, hashlib.sha256(code_version(config).encode()).hexdigest()[:16])


def load_policy(path: Path | None, base: TranscriberConfig) -> TranscriptionPolicy:
    if path is None:
        return TranscriptionPolicy(base)
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as error:
        raise PolicyError(f"{path}: cannot be read ({error.strerror})") from None
    except yaml.YAMLError as error:
        raise PolicyError(f"{path}: not valid YAML: {error}") from None
    try:
        parsed = _PolicyFile.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'rules'}: {e['msg']}" for e in error.errors())
        raise PolicyError(f"{path}: {problems}") from None
    return TranscriptionPolicy(base, parsed.rules)


def stale_batches(
    policy: TranscriptionPolicy, transcripts: pl.DataFrame, base_of: Callable[[dict], TranscriberConfig] | None = None
) -> dict[str, int]:
    """Batch key -> how many of its transcribed recordings the policy would now transcribe otherwise.

    Each row keeps the version of the settings it was transcribed with, so a changed rule marks the
    batches of exactly the recordings it now routes differently, and no others. `base_of(row)`: the
    settings of the model the model registry now gives the row's user (a promotion, an experiment)."""
    if transcripts.is_empty() or "transcriber_version" not in transcripts.columns:
        return {}
    stale: dict[str, int] = {}
    for row in transcripts.filter(pl.col("status") == STATUS_OK).iter_rows(named=True):
        chooser = policy.on(base_of(row)) if base_of else policy
        if chooser.choose(row.get("priority"), row["audio_seconds"]).version != row["transcriber_version"]:
            stale[row["batch_key"]] = stale.get(row["batch_key"], 0) + 1
    return stale


def priority_of(relative_path: str) -> str | None:
    """`<user>/<tag>/.../<file>` -> `<tag>`; a file directly in the user's folder has no tag."""
    parts = relative_path.split("/")
    return parts[1] if len(parts) > 2 else None
