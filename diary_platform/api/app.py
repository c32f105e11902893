"""The FastAPI application of `diary serve`: routes over the landing area, the shared state and the tables.

Uploads are streamed into the landing area under the caller's user (`<landing>/<user>/[<priority>/]`),
where the landing sensor takes them like any other file; status comes from the claims and the stored
tables (documents.py). The synchronous OpenAI-compatible endpoint runs the same `process_batch` job as
`diary run`, so its recordings are recorded like any other. Errors are JSON: `{"error": {"message", "type"}}`.
"""

import asyncio
import base64
import re
import shutil
import tempfile
import threading
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from diary_platform import telemetry
from diary_platform.api import transcriptions
from diary_platform.api.documents import Documents
from diary_platform.api.keys import ApiKeys
from diary_platform.api.limits import Limits, rate_limiter
from diary_platform.api.uploads import ReceivedUpload, UploadRejected, place, receive, safe_name
from diary_platform.domain.catalog import Catalog
from diary_platform.domain.ingest.api_uploads import ApiUpload
from diary_platform.domain.ingest.audio_estimate import estimate_audio_seconds
from diary_platform.domain.notes.router import PRIORITIES
from diary_platform.domain.store.hashing import recording_id_for
from diary_platform.domain.webhooks import UnsafeWebhookUrl, check_url, new_delivery
from diary_platform.settings import Settings

BYTES_PER_BOOKING = 1024 * 1024
RECORDING_ID = re.compile(r"[0-9a-f]{24}")
FILE_TYPES = {"transcript.txt": ("txt_uri", "text/plain"), "transcript.srt": ("srt_uri", "application/x-subrip"),
              "transcript.vtt": ("vtt_uri", "text/vtt"), "transcript.json": ("json_uri", "application/json"),
              "note.md": ("note_uri", "text/markdown")}


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers or {}


def _templates() -> set[str]:
    return {p.name.removesuffix(".yaml") for p in resources.files("diary_platform.templates").iterdir() if p.name.endswith(".yaml")}


class Platform:
    """What the routes share: the settings, keys, limits, store, shared state and (lazily) the instance."""

    def __init__(self, settings: Settings):
        from diary_platform.resources import open_state, open_store

        self.settings = settings
        self.keys = ApiKeys.parse(settings.api.keys.get_secret_value(), settings.api.keys_file)
        self.limiter = rate_limiter(Limits(settings.api.requests_per_minute, settings.api.bytes_per_hour), settings.api.redis_url or None)
        self.store = open_store(settings)
        self.state = open_state(settings, self.instance)
        self.templates = _templates()
        self._sync_lock = threading.Lock()

    @property
    def instance(self):
        if not hasattr(self, "_instance"):
            from diary_platform.runner import dagster_instance

            self._instance = dagster_instance(self.settings)
        return self._instance

    def documents(self, request: Request) -> Documents:
        base = str(request.base_url).rstrip("/")
        return Documents(self.state.claims, self.state.batches, Catalog(self.store), lambda rid, name: f"{base}/v1/recordings/{rid}/{name}")


def create_app(settings: Settings) -> FastAPI:
    platform = Platform(settings)
    app = FastAPI(
        title="Spoken-diary platform API",
        version="1",
        description="Upload recordings, follow them to a transcript and a diary note, or transcribe synchronously "
        "(OpenAI-compatible). Authenticate with `Authorization: Bearer <key>`.",
    )
    app.state.platform = platform

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse({"error": {"message": error.message, "type": error.kind}}, status_code=error.status, headers=error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": {"message": str(error.detail), "type": "http_error"}}, status_code=error.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        return JSONResponse({"error": {"message": problems, "type": "invalid_request_error"}}, status_code=422)

    async def caller(request: Request) -> str:
        """The key's user; every authenticated request counts against the key's and the client IP's limits."""
        scheme, _, key = (request.headers.get("authorization") or "").partition(" ")
        user = platform.keys.user_of(key.strip()) if scheme.lower() == "bearer" and key.strip() else None
        address = f"ip:{request.client.host if request.client else 'unknown'}"
        if user is None:  # a wrong key still counts against the address: guessing keys is rate limited too
            _enforce(await asyncio.to_thread(platform.limiter.hit, [address], 1))
            raise ApiError(401, "a valid API key is required: Authorization: Bearer <key>", "unauthorized", {"WWW-Authenticate": "Bearer"})
        request.state.subjects = [f"key:{user}", address]
        _enforce(await asyncio.to_thread(platform.limiter.hit, request.state.subjects, 1))
        return user

    User = Annotated[str, Depends(caller)]

    async def streamed(request: Request, folder: Path, max_bytes: int) -> ReceivedUpload:
        """The upload, its bytes counted against the hourly limits a megabyte at a time as they arrive."""
        unbooked = 0

        async def count(nbytes: int) -> None:
            nonlocal unbooked
            unbooked += nbytes
            if unbooked >= BYTES_PER_BOOKING:
                booked, unbooked = unbooked, 0
                _enforce(await asyncio.to_thread(platform.limiter.hit, request.state.subjects, 0, booked))

        try:
            received = await receive(request.headers.get("content-type", ""), request.stream(), folder, max_bytes, count)
        except UploadRejected as rejected:
            raise ApiError(rejected.status, str(rejected), "invalid_request_error" if rejected.status != 413 else "too_large") from None
        if unbooked:
            await asyncio.to_thread(platform.limiter.hit, request.state.subjects, 0, unbooked)
        return received

    @app.post("/v1/recordings", status_code=202, summary="Upload a recording (multipart: file, priority, template, webhook_url)",
              openapi_extra=_multipart_schema({"priority": list(PRIORITIES), "template": None, "webhook_url": None}))
    async def upload_recording(request: Request, user: User) -> JSONResponse:
        landing = platform.settings.landing_dir / user
        staging = landing if not platform.settings.landing_uri else Path(tempfile.mkdtemp(prefix="diary-upload-"))
        received = await streamed(request, staging, platform.settings.decode_limits.max_file_bytes)
        try:
            fields = _upload_options(received.fields, platform)
            recording_id = recording_id_for(received.sha256)
            known = platform.state.api_uploads.get(user, recording_id)
            if known is None:
                name = f"{recording_id[:12]}-{safe_name(received.filename)}"
                relative = "/".join(filter(None, [user, fields["priority"], name]))
                landed = await asyncio.to_thread(_land, platform, received, relative)
                known = platform.state.api_uploads.add(ApiUpload(
                    user=user, recording_id=recording_id, content_sha256=received.sha256, file=received.filename,
                    landing_path=landed, size=received.size, created_at=datetime.now(timezone.utc), priority=fields["priority"],
                    template=fields["template"], webhook_url=fields["webhook_url"], traceparent=telemetry.traceparent_tags().get("diary/traceparent"),
                ))
                if known.webhook_url:
                    platform.state.webhook_deliveries.register(new_delivery(user, recording_id, known.webhook_url, known.created_at))
        finally:
            received.discard()
            if staging != landing:
                shutil.rmtree(staging, ignore_errors=True)
        document = platform.documents(request).document(known)
        return JSONResponse(
            {"id": recording_id, "status": document["status"], "status_url": f"{str(request.base_url).rstrip('/')}/v1/recordings/{recording_id}"},
            status_code=202,
        )

    @app.get("/v1/recordings/{recording_id}", summary="A recording's status, transcript and note")
    async def get_recording(recording_id: str, request: Request, user: User) -> dict:
        return platform.documents(request).document(_own(platform, user, recording_id))

    @app.get("/v1/recordings", summary="The caller's recordings, newest first")
    async def list_recordings(
        request: Request,
        user: User,
        status: Annotated[str | None, Query(pattern="^(queued|processing|done|quarantined|failed)$")] = None,
        since: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: str | None = None,
    ) -> dict:
        documents = platform.documents(request)
        position = _cursor(cursor)
        found: list[dict] = []
        scanned = 0
        while len(found) < limit and scanned < 1000:
            page = platform.state.api_uploads.newest(user, 100, position, _aware(since))
            if not page:
                position = None
                break
            for upload in page:
                scanned += 1
                position = upload.position
                document = documents.document(upload)
                if status is None or document["status"] == status:
                    found.append(document)
                    if len(found) == limit:
                        break
        more = position is not None and bool(platform.state.api_uploads.newest(user, 1, position, _aware(since)))
        return {"data": found, "next_cursor": _encode(position) if more else None}

    @app.get("/v1/recordings/{recording_id}/{name}", summary="A recording's transcript file or note",
             responses={200: {"content": {media: {} for _, media in FILE_TYPES.values()}}})
    async def recording_file(recording_id: str, name: str, request: Request, user: User) -> Response:
        if name not in FILE_TYPES:
            raise ApiError(404, f"no file {name!r}: transcript.txt, .srt, .vtt, .json or note.md", "not_found")
        upload = _own(platform, user, recording_id)
        column, media = FILE_TYPES[name]
        _, rows = platform.documents(request).rows(upload)
        row = next((r for r in reversed(list(rows.values())) if r.get(column)), None)
        if row is None or row["status"] != "ok":
            raise ApiError(404, f"{name} is not there yet: see the recording's status", "not_found")
        return Response(await asyncio.to_thread(platform.store.read_text, row[column]), media_type=media)

    @app.post("/v1/audio/transcriptions", summary="Transcribe now (OpenAI-compatible)",
              openapi_extra=_multipart_schema({"model": None, "language": None, "prompt": None, "temperature": "number",
                                               "response_format": list(transcriptions.RESPONSE_FORMATS), "timestamp_granularities[]": None}))
    async def transcribe_now(request: Request, user: User) -> Response:
        folder = Path(tempfile.mkdtemp(prefix="diary-transcribe-"))
        try:
            received = await streamed(request, folder, platform.settings.api.sync_max_bytes)
        except ApiError as error:
            shutil.rmtree(folder, ignore_errors=True)
            if error.status == 413:
                error.message += " for a synchronous transcription: upload it to /v1/recordings instead"
            raise
        try:
            response_format = received.fields.get("response_format") or "json"
            if response_format not in transcriptions.RESPONSE_FORMATS:
                raise ApiError(400, f"response_format must be one of {', '.join(transcriptions.RESPONSE_FORMATS)}", "invalid_request_error")
            seconds = estimate_audio_seconds(received.filename, received.size, received.head)
            if seconds > platform.settings.api.sync_max_seconds:
                raise ApiError(413, f"about {seconds:.0f} s of audio is more than {platform.settings.api.sync_max_seconds:.0f} s for a "
                               "synchronous transcription: upload it to /v1/recordings instead", "too_large")
            path = folder / safe_name(received.filename)
            place(received, path)
            document, transcript = await asyncio.to_thread(_transcribe, platform, request, user, path, received)
        finally:
            received.discard()
            shutil.rmtree(folder, ignore_errors=True)
        if document["status"] != "done" and transcript is None:
            raise ApiError(400, f"the recording was not transcribed: [{document['reason']}] {document['message']}", "invalid_request_error")
        body = transcriptions.rendered(response_format, transcript, document["audio_seconds"] or 0.0, platform.store.read_text)
        if isinstance(body, dict):
            return JSONResponse(body)
        return PlainTextResponse(body, media_type=transcriptions.MEDIA_TYPES[response_format])

    @app.get("/healthz", summary="The process is up")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", summary="The instance and the storage answer (the rate-limit store is reported, not required)")
    async def readyz() -> JSONResponse:
        checks = await asyncio.to_thread(_readiness, platform)
        ready = checks["instance"] and checks["storage"]
        return JSONResponse({"status": "ready" if ready else "not_ready", "checks": checks}, status_code=200 if ready else 503)

    telemetry.configure()
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz")
    return app


def _enforce(decision) -> None:
    if not decision.allowed:
        raise ApiError(429, f"rate limit reached ({decision.limit}): retry in {decision.retry_after} s", "rate_limit_exceeded",
                       {"Retry-After": str(decision.retry_after)})


def _upload_options(fields: dict[str, str], platform: Platform) -> dict:
    priority = fields.get("priority") or None
    if priority is not None and priority not in PRIORITIES:
        raise ApiError(400, f"priority must be one of {', '.join(PRIORITIES)}", "invalid_request_error")
    template = fields.get("template") or None
    if template is not None and template not in platform.templates:
        raise ApiError(400, f"template must be one of {', '.join(sorted(platform.templates))}", "invalid_request_error")
    webhook_url = fields.get("webhook_url") or None
    if webhook_url is not None:
        try:
            webhook_url = check_url(webhook_url, platform.settings.api.allow_loopback_webhooks)
        except UnsafeWebhookUrl as unsafe:
            raise ApiError(400, f"webhook_url refused: {unsafe}", "invalid_request_error") from None
    return {"priority": priority, "template": template, "webhook_url": webhook_url}


def _land(platform: Platform, received: ReceivedUpload, relative: str) -> str:
    """Put the streamed file where the landing sensor looks: a rename in the landing folder, or an upload to
    the landing bucket. The path or URI it landed at."""
    if not platform.settings.landing_uri:
        destination = platform.settings.landing_dir / relative
        if not destination.exists():
            place(received, destination)
        return str(destination)
    from diary_platform.resources import gcs_client

    bucket, _, prefix = platform.settings.landing_uri.removeprefix("gs://").partition("/")
    name = "/".join(filter(None, [prefix.strip("/"), relative]))
    from google.api_core.exceptions import PreconditionFailed

    try:  # created, never overwritten: the same name already there holds the same content
        gcs_client(platform.settings.gcs_project).bucket(bucket).blob(name).upload_from_filename(str(received.path), if_generation_match=0)
    except PreconditionFailed:
        pass
    return f"gs://{bucket}/{name}"


def _transcribe(platform: Platform, request: Request, user: str, path: Path, received: ReceivedUpload) -> tuple[dict, dict | None]:
    """One file through `process_batch`, as `diary run` runs it (one at a time per process: the model is
    loaded once and the CPU is the limit); its status document and its transcript row."""
    from diary_platform.runner import process_files

    with platform._sync_lock:
        process_files([path], user, platform.settings, platform.instance)
    upload = platform.state.api_uploads.add(ApiUpload(
        user=user, recording_id=recording_id_for(received.sha256), content_sha256=received.sha256, file=received.filename,
        landing_path=str(path), size=received.size, created_at=datetime.now(timezone.utc),
    ))
    documents = platform.documents(request)
    _, rows = documents.rows(upload)
    transcript = rows.get("transcripts")
    return documents.document(upload), transcript if transcript and transcript["status"] == "ok" else None


def _readiness(platform: Platform) -> dict[str, bool]:
    checks = {}
    try:
        platform.instance.get_runs(limit=1)
        checks["instance"] = True
    except Exception:
        checks["instance"] = False
    try:
        platform.store.objects.exists("readyz-probe")
        checks["storage"] = True
    except Exception:
        checks["storage"] = False
    checks["rate_limits"] = platform.limiter.ready()
    return checks


def _own(platform: Platform, user: str, recording_id: str) -> ApiUpload:
    """The caller's upload, or 404: another user's recording is not found, not forbidden."""
    upload = platform.state.api_uploads.get(user, recording_id) if RECORDING_ID.fullmatch(recording_id) else None
    if upload is None:
        raise ApiError(404, f"no recording {recording_id!r}", "not_found")
    return upload


def _aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=timezone.utc) if moment is not None and moment.tzinfo is None else moment


def _encode(position: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(f"{position[0]}|{position[1]}".encode()).decode()


def _cursor(cursor: str | None) -> tuple[str, str] | None:
    if not cursor:
        return None
    try:
        created, _, recording_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        datetime.fromisoformat(created)
        return created, recording_id
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "cursor is not one this API gave", "invalid_request_error") from None


def _multipart_schema(fields: dict[str, list | str | None]) -> dict:
    """The request body in the OpenAPI document: the routes read the stream themselves, so FastAPI cannot infer it."""
    properties: dict = {"file": {"type": "string", "format": "binary"}}
    for name, kind in fields.items():
        properties[name] = {"type": "string", "enum": kind} if isinstance(kind, list) else {"type": kind or "string"}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {"type": "object", "properties": properties, "required": ["file"]}}}}}
