"""What notes cost: list prices per model (a YAML file) and a per-user, per-day spend record."""

import fcntl
import json
from datetime import date
from importlib import resources
from pathlib import Path

import yaml

from diary_platform.domain.store.layout import write_text_atomic


def load_prices(path: Path | None = None) -> dict[str, dict[str, float]]:
    text = Path(path).read_text() if path else resources.files("diary_platform.config").joinpath("prices.yaml").read_text()
    return yaml.safe_load(text) or {}


def call_cost(prices: dict, model: str, input_tokens: int, output_tokens: int) -> float:
    price = prices.get(model)
    if not price:
        return 0.0
    return (input_tokens * price["input"] + output_tokens * price["output"]) / 1_000_000


class DailySpend:
    """Spend per user and day in one small file each, updated under a lock by every process."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, user: str, day: date) -> Path:
        return self.root / "spend" / f"{day.isoformat()}" / f"{user}.json"

    def spent(self, user: str, day: date) -> float:
        try:
            return json.loads(self._path(user, day).read_text())["usd"]
        except FileNotFoundError:
            return 0.0

    def add(self, user: str, day: date, usd: float) -> None:
        path = self._path(user, day)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            write_text_atomic(path, json.dumps({"usd": self.spent(user, day) + usd}))
