"""Uploads received by the HTTP API: who sent which content, under what name, with what options.

The API writes each upload into the landing area like any other, and records it here, so that a user
finds their own recordings (and only theirs) by id, lists them newest first, and a webhook knows where to
go. One record per (user, recording id): the same content uploaded twice by one user is one record and
one recording. Files (one JSON per record) or Postgres (`diary_api_uploads`), like the rest of the state.
"""

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from diary_platform.domain.state_database import StateDatabase

@dataclass(frozen=True)
class ApiUpload:
    user: str
    recording_id: str
    content_sha256: str
    file: str
    landing_path: str
    size: int
    created_at: datetime
    priority: str | None = None
    template: str | None = None
    webhook_url: str | None = None
    traceparent: str | None = None

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "created_at": self.created_at.isoformat()})

    @classmethod
    def from_json(cls, raw: str | dict) -> "ApiUpload":
        data = json.loads(raw) if isinstance(raw, str) else dict(raw)
        return cls(**{**data, "created_at": datetime.fromisoformat(data["created_at"])})

    @property
    def position(self) -> tuple[str, str]:
        """Where it sits in the newest-first order: a listing's cursor."""
        return self.created_at.isoformat(), self.recording_id


class ApiUploads(Protocol):
    def add(self, upload: ApiUpload) -> ApiUpload:
        """Record `upload` unless the user already has that recording; the stored record either way."""
        ...

    def get(self, user: str, recording_id: str) -> ApiUpload | None: ...

    def newest(self, user: str, limit: int, before: tuple[str, str] | None = None, since: datetime | None = None) -> list[ApiUpload]:
        """The user's uploads, newest first, after the cursor `before` and created at `since` or later."""
        ...


def _window(uploads: list[ApiUpload], limit: int, before: tuple[str, str] | None, since: datetime | None) -> list[ApiUpload]:
    ordered = sorted(uploads, key=lambda u: (u.created_at, u.recording_id), reverse=True)
    kept = [
        u for u in ordered
        if (before is None or (u.created_at, u.recording_id) < (datetime.fromisoformat(before[0]), before[1]))
        and (since is None or u.created_at >= since)
    ]
    return kept[:limit]


class FileApiUploads(ApiUploads):
    """One JSON file per record under `<root>/<user>/` (a single machine)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, user: str, recording_id: str) -> Path:
        return self.root / user / f"{recording_id}.json"

    def add(self, upload: ApiUpload) -> ApiUpload:
        path = self._path(upload.user, upload.recording_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(path, "x") as created:
                created.write(upload.to_json())
            return upload
        except FileExistsError:
            return self.get(upload.user, upload.recording_id)

    def get(self, user: str, recording_id: str) -> ApiUpload | None:
        try:
            return ApiUpload.from_json(self._path(user, recording_id).read_text())
        except FileNotFoundError:
            return None

    def newest(self, user: str, limit: int, before: tuple[str, str] | None = None, since: datetime | None = None) -> list[ApiUpload]:
        folder = self.root / user
        uploads = [ApiUpload.from_json(path.read_text()) for path in folder.glob("*.json")] if folder.is_dir() else []
        return _window(uploads, limit, before, since)


class PostgresApiUploads(ApiUploads):
    def __init__(self, database: StateDatabase):
        self.database = database

    def add(self, upload: ApiUpload) -> ApiUpload:
        self.database.execute(
            "INSERT INTO diary_api_uploads (user_name, recording_id, created_at, record) VALUES (:user, :id, :created, CAST(:record AS jsonb))"
            " ON CONFLICT (user_name, recording_id) DO NOTHING",
            user=upload.user, id=upload.recording_id, created=upload.created_at, record=upload.to_json(),
        )
        return self.get(upload.user, upload.recording_id)

    def get(self, user: str, recording_id: str) -> ApiUpload | None:
        rows = self.database.rows(
            "SELECT record FROM diary_api_uploads WHERE user_name = :user AND recording_id = :id", user=user, id=recording_id
        )
        return ApiUpload.from_json(rows[0].record) if rows else None

    def newest(self, user: str, limit: int, before: tuple[str, str] | None = None, since: datetime | None = None) -> list[ApiUpload]:
        conditions = ["user_name = :user"]
        params: dict = {"user": user, "limit": limit}
        if before is not None:
            conditions.append("(created_at, recording_id) < (:before_at, :before_id)")
            params.update(before_at=datetime.fromisoformat(before[0]), before_id=before[1])
        if since is not None:
            conditions.append("created_at >= :since")
            params["since"] = since
        rows = self.database.rows(
            f"SELECT record FROM diary_api_uploads WHERE {' AND '.join(conditions)} ORDER BY created_at DESC, recording_id DESC LIMIT :limit",
            **params,
        )
        return [ApiUpload.from_json(row.record) for row in rows]
