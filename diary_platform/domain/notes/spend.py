"""What notes cost: list prices per model (a YAML file) and a per-user, per-day spend record every process shares."""

import fcntl
import json
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Protocol

import yaml

from diary_platform.domain.state_database import StateDatabase
from diary_platform.domain.store.layout import write_text_atomic


def load_prices(path: Path | None = None) -> dict[str, dict[str, float]]:
    """Prices per model; every value a float (YAML 1.1 reads a number like 5e-07, without a decimal point, as a string)."""
    text = Path(path).read_text() if path else resources.files("diary_platform.config").joinpath("prices.yaml").read_text()
    return {model: {name: float(value) for name, value in price.items()} for model, price in (yaml.safe_load(text) or {}).items()}


@dataclass(frozen=True)
class TokenUsage:
    """What one or more calls used. `input_tokens` counts every prompt token, the cached ones and those
    written to the cache included; `cached_input_tokens` were read from the provider's prompt cache and
    `cache_write_tokens` written to it (Anthropic prices both apart); `batch` says a batch API answered."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    batch: bool = False

    def __add__(self, other: "TokenUsage") -> "TokenUsage":
        return TokenUsage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_input_tokens + other.cached_input_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.batch or other.batch,
        )


def call_cost(prices: dict, model: str, usage: TokenUsage) -> float:
    """What `usage` costs at `model`'s prices: cached and cache-written input at their own rates, the
    whole at the batch share when a batch API answered. A model without prices costs nothing."""
    price = prices.get(model)
    if not price:
        return 0.0
    uncached = max(usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens, 0)
    dollars = (
        uncached * price["input"]
        + usage.cached_input_tokens * price.get("cached_input", price["input"])
        + usage.cache_write_tokens * price.get("cache_write", price["input"])
        + usage.output_tokens * price["output"]
    ) / 1_000_000
    return dollars * (price.get("batch_share", 1.0) if usage.batch else 1.0)


def list_cost(prices: dict, model: str, usage: TokenUsage) -> float:
    """What `usage` would have cost as synchronous calls without a prompt cache: the base of the savings."""
    return call_cost(prices, model, TokenUsage(usage.input_tokens, usage.output_tokens))


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
