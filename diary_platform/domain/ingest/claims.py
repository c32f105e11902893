"""What has been ingested: one small marker file per landing file and per content hash.

Markers are created with O_EXCL, so two ingest paths (the sensor and `diary run`) racing for the
same content cannot both win. A lookup is one `stat`, so the claims scale with the data folder,
not with a sensor cursor.
"""

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LandingFileKey:
    """A landing file as the sensor saw it: the same path rewritten with new bytes is a new file."""

    user: str
    relative_path: str
    size: int
    mtime_ns: int

    @property
    def digest(self) -> str:
        raw = f"{self.user}\0{self.relative_path}\0{self.size}\0{self.mtime_ns}".encode()
        return hashlib.sha256(raw).hexdigest()


class Claims:
    def __init__(self, root: Path):
        self.root = Path(root)

    def _marker(self, kind: str, digest: str) -> Path:
        return self.root / kind / digest[:2] / f"{digest}.json"

    def _create(self, marker: Path, payload: dict) -> bool:
        marker.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as handle:
            json.dump(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        return True

    def _read(self, marker: Path) -> dict | None:
        try:
            return json.loads(marker.read_text())
        except FileNotFoundError:
            return None

    def claim_content(self, content_sha256: str, batch_key: str, source: str) -> bool:
        """True when this content was never ingested before and now belongs to `batch_key`."""
        return self._create(
            self._marker("content", content_sha256), {"batch": batch_key, "source": source}
        )

    def content_batch(self, content_sha256: str) -> str | None:
        record = self._read(self._marker("content", content_sha256))
        return record["batch"] if record else None

    def file_taken(self, key: LandingFileKey) -> bool:
        return self._marker("files", key.digest).exists()

    def mark_file_taken(self, key: LandingFileKey, content_sha256: str, batch_key: str | None) -> None:
        self._create(
            self._marker("files", key.digest),
            {"path": key.relative_path, "user": key.user, "sha256": content_sha256, "batch": batch_key},
        )
