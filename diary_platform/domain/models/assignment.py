"""A/B assignment: which model a recording gets while an experiment of the model registry runs.

A user is in the candidate arm when the hash of (experiment id, user) falls under the experiment's share:
stable for the user for the whole experiment, independent between experiments, and about `share` of the
users (test_model_registry checks the share over 10,000 synthetic users). Outside an experiment, or for
the baseline arm, the recording gets the baseline in force (the latest promotion, else the file's). The
arm, the experiment and the model id are columns of the transcripts and notes tables, so every metric
splits by arm.
"""

import hashlib
from dataclasses import dataclass
from datetime import datetime

from diary_platform.domain.models.registry import NOTES, TRANSCRIPTION, Experiment, ModelPromotions, Registry
from diary_platform.domain.speech.transcription import TranscriberConfig

BASELINE, CANDIDATE = "baseline", "candidate"


def bucket(experiment_id: str, user: str) -> float:
    """A number in [0, 1) fixed by the experiment and the user."""
    digest = hashlib.sha256(f"{experiment_id}\x00{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def arm_of(experiment: Experiment | None, user: str, now: datetime) -> str | None:
    """`candidate` or `baseline` while the experiment runs; None without one."""
    if experiment is None or not experiment.running(now):
        return None
    return CANDIDATE if bucket(experiment.id, user) < experiment.share else BASELINE


@dataclass(frozen=True)
class Assignment:
    model_id: str | None
    arm: str | None = None
    experiment: str | None = None


class ModelRouting:
    """The registry's answer for one recording at `now`: its arm and the model of that arm."""

    def __init__(self, registry: Registry, promotions: ModelPromotions | None, now: datetime):
        self.registry = registry
        self.promotions = promotions
        self.now = now

    def assignment(self, kind: str, user: str) -> Assignment:
        experiment = self.registry.experiment(kind)
        arm = arm_of(experiment, user, self.now)
        baseline = self.registry.baseline(kind, self.promotions)
        model = experiment.candidate if arm == CANDIDATE else baseline
        return Assignment(model, arm, experiment.id if arm else None)

    def transcription(self, user: str) -> tuple[Assignment, TranscriberConfig]:
        chosen = self.assignment(TRANSCRIPTION, user)
        return chosen, self.registry.transcription[chosen.model_id].config

    def notes_model(self, user: str) -> tuple[Assignment, tuple[str, str] | None]:
        """The arm, and the (provider, model) a candidate-arm note is written by first; None keeps the note's route."""
        chosen = self.assignment(NOTES, user)
        if chosen.arm != CANDIDATE:
            return chosen, None
        entry = self.registry.notes[chosen.model_id]
        return chosen, (entry.provider, entry.model)
