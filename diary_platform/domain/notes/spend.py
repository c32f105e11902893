"""What notes cost: list prices per model (a YAML file) and a per-user, per-day spend record every process shares."""

import fcntl
import json
from datetime import date
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Protocol

import yaml

from diary_platform.domain.state_database import StateDatabase
from diary_platform.domain.store.layout import write_text_atomic


def load_prices(path: Path | None = None) -> dict[str, dict[str, float]]:
    text = Path(path).read_text() if path else resources.files("diary_platform.config").joinpath("prices.yaml").read_text()
    return yaml.safe_load(text) or {}


def call_cost(prices: dict, model: str, input_tokens: int, output_tokens: int) -> float:
    price = prices.get(model)
    if not price:
        return 0.0
    return (input_tokens * price["input"] + output_tokens * price["output"]) / 1_000_000


class DailySpend(Protocol):
    """Spend per user and day, booked by every process: files (FileDailySpend) or Postgres (PostgresDailySpend)."""

    def spent(self, user: str, day: date) -> float: ...

    def add(self, user: str, day: date, usd: float) -> float:
        """Book `usd`; the user's total for the day after it, as this booking left it."""
        ...


class FileDailySpend(DailySpend):
    """One small file per user and day, updated under a lock (a single machine)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, user: str, day: date) -> Path:
        return self.root / "spend" / f"{day.isoformat()}" / f"{user}.json"

    def spent(self, user: str, day: date) -> float:
        try:
            return json.loads(self._path(user, day).read_text())["usd"]
        except FileNotFoundError:
            return 0.0

    def add(self, user: str, day: date, usd: float) -> float:
        path = self._path(user, day)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            total = self.spent(user, day) + usd
            write_text_atomic(path, json.dumps({"usd": total}))
            return total


class PostgresDailySpend(DailySpend):
    """One row per user and day, added to by a single atomic upsert (exact decimal sums)."""

    def __init__(self, database: StateDatabase):
        self.database = database

    def spent(self, user: str, day: date) -> float:
        rows = self.database.rows("SELECT usd FROM diary_daily_spend WHERE user_name = :user AND day = :day", user=user, day=day)
        return float(rows[0].usd) if rows else 0.0

    def add(self, user: str, day: date, usd: float) -> float:
        [row] = self.database.rows(
            "INSERT INTO diary_daily_spend (user_name, day, usd) VALUES (:user, :day, :usd)"
            " ON CONFLICT (user_name, day) DO UPDATE SET usd = diary_daily_spend.usd + excluded.usd RETURNING usd",
            user=user, day=day, usd=Decimal(repr(usd)),
        )
        return float(row.usd)
