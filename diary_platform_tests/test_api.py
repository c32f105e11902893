"""The HTTP API (`diary serve`) as a client meets it: the real server on a loopback port, the real SDKs.

Uploads land in the landing folder; the test plays the daemon (landing sensor ticks, the batch run) in
this process over the same data folder, and the server reads the result from the claims and tables.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import httpx2
import openai
import pytest

from diary_platform import batch
from diary_platform.api.keys import webhook_secret
from diary_platform.batch.landing_sensor import landing_sensor
from diary_platform.definitions import build_resources
from diary_platform.settings import Settings
from diary_platform_tests.conftest import free_port

DIARY = str(Path(sys.executable).parent / "diary")
ALICE, BOB = "alice-key-0123456789abcdef", "bob-key-0123456789abcdef"
SRT_BLOCK = re.compile(r"^\d+\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n.+", re.MULTILINE)
VTT_CUE = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}\n.+", re.MULTILINE)


class Server:
    """`diary serve` in a child process, on a free port, over `root`'s data folder."""

    def __init__(self, root: Path, **env: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ, "DIARY_DATA_DIR": str(root / "data"), "DIARY_LANDING": str(root / "landing"),
            "DAGSTER_HOME": str(root / "data" / "dagster_home"), "DIARY_API_KEYS": f"alice:{ALICE},bob:{BOB}",
            "DIARY_BATCH_MAX_WAIT_SECONDS": "0", "DIARY_API_ALLOW_LOOPBACK_WEBHOOKS": "true", **env,
        }
        self.process = subprocess.Popen([DIARY, "serve", "--port", str(self.port)], env=self.env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while True:
            assert self.process.poll() is None, self.process.stderr.read()
            try:
                if httpx2.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx2.TransportError:
                pass
            assert time.monotonic() < deadline, "diary serve did not come up"
            time.sleep(0.05)

    def client(self, key: str | None = ALICE) -> httpx2.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx2.Client(base_url=self.url, headers=headers, timeout=60)

    def rss_bytes(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024

    def settings(self, monkeypatch) -> Settings:
        for name in ("DIARY_DATA_DIR", "DIARY_LANDING", "DAGSTER_HOME", "DIARY_BATCH_MAX_WAIT_SECONDS"):
            monkeypatch.setenv(name, self.env[name])
        return Settings()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = Server(tmp_path_factory.mktemp("api"))
    yield running
    running.stop()


def process_landed(settings: Settings, instance: dg.DagsterInstance) -> int:
    """What the daemon would do: landing sensor ticks until the uploads are batched, each batch run. The runs made."""
    resources = build_resources(settings)
    cursor, runs = None, 0
    for _ in range(4):
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
            result = landing_sensor(context)
        cursor = result.cursor
        for request in result.run_requests:
            instance.add_dynamic_partitions("batches", [request.partition_key])
            done = dg.materialize([*batch.assets(settings)], partition_key=request.partition_key, instance=instance, resources=resources)
            assert done.success
            runs += 1
        if runs and not result.run_requests:
            break
    return runs


def upload(client: httpx2.Client, path: Path, **fields: str) -> httpx2.Response:
    with open(path, "rb") as handle:
        return client.post("/v1/recordings", files={"file": (path.name, handle, "audio/mpeg")}, data=fields)


def test_an_upload_is_queued_processed_and_read_back_with_its_files(server, clips, monkeypatch):
    with server.client() as alice:
        answer = upload(alice, clips[0].path, priority="urgent", template="todo_list")
        assert answer.status_code == 202, answer.text
        accepted = answer.json()
        assert accepted["status"] == "queued" and accepted["status_url"].endswith(f"/v1/recordings/{accepted['id']}")
        assert re.fullmatch(r"[0-9a-f]{24}", accepted["id"])
        assert alice.get(f"/v1/recordings/{accepted['id']}").json()["status"] == "queued"
        again = upload(alice, clips[0].path)
        assert again.status_code == 202 and again.json()["id"] == accepted["id"], "the same content is the same recording"
        landed = [p for p in Path(server.env["DIARY_LANDING"]).rglob("*") if p.is_file()]
        assert len(landed) == 1 and landed[0].parent.name == "urgent" and landed[0].parent.parent.name == "alice"

        with dg.instance_for_test() as instance:
            assert process_landed(server.settings(monkeypatch), instance) == 1
        document = alice.get(f"/v1/recordings/{accepted['id']}").json()
        assert (document["status"], document["stage"], document["priority"]) == ("done", "notes", "urgent")
        assert document["file"] == clips[0].path.name and document["audio_seconds"] > 0
        assert document["transcript"]["text"].strip() and document["transcript"]["segments"]
        assert document["note"]["title"] and document["note"]["markdown"].startswith("# ")
        assert set(document["links"]) == {"txt", "srt", "vtt", "json", "note"}
        srt = alice.get(f"/v1/recordings/{accepted['id']}/transcript.srt")
        assert srt.status_code == 200 and SRT_BLOCK.search(srt.text)
        vtt = alice.get(document["links"]["vtt"])
        assert vtt.text.startswith("WEBVTT") and VTT_CUE.search(vtt.text)
        assert json.loads(alice.get(document["links"]["json"]).text)["segments"]
        assert alice.get(document["links"]["note"]).text == document["note"]["markdown"]
        listed = alice.get("/v1/recordings", params={"status": "done"}).json()
        assert accepted["id"] in [d["id"] for d in listed["data"]]


def test_keys_are_required_and_a_user_never_sees_anothers_recording(server, clips):
    with server.client(None) as anonymous, server.client("not-a-key-at-all-0000") as wrong, server.client() as alice, server.client(BOB) as bob:
        for client in (anonymous, wrong):
            refused = client.get("/v1/recordings")
            assert refused.status_code == 401 and refused.json()["error"]["type"] == "unauthorized"
        mine = upload(alice, clips[1].path).json()["id"]
        assert bob.get(f"/v1/recordings/{mine}").status_code == 404, "another user's recording is not found, not forbidden"
        assert bob.get(f"/v1/recordings/{mine}/transcript.txt").status_code == 404
        assert mine not in [d["id"] for d in bob.get("/v1/recordings").json()["data"]]
        assert alice.get(f"/v1/recordings/{mine}").status_code == 200
        for probe in ("..", "...", "%2e%2e", mine.upper(), mine + "0", "../bob/" + mine):
            assert alice.get(f"/v1/recordings/{probe}").status_code == 404, probe


def test_a_listing_pages_with_its_cursor(server, clips):
    with server.client() as alice:
        for clip in clips[2:5]:
            assert upload(alice, clip.path).status_code == 202
        seen, cursor = [], None
        for _ in range(10):
            page = alice.get("/v1/recordings", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
            seen += [d["id"] for d in page["data"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert len(seen) == len(set(seen)) >= 3
        assert alice.get("/v1/recordings", params={"cursor": "garbage"}).status_code == 400


def test_hostile_webhook_urls_are_refused_at_upload(server, clips):
    with server.client() as alice:
        for url in ("http://169.254.169.254/latest/meta-data/", "file:///etc/passwd", "https://10.1.2.3/hook",
                    "https://metadata.google.internal/x", "gopher://127.0.0.1:70/"):
            refused = upload(alice, clips[0].path, webhook_url=url)
            assert refused.status_code == 400 and "webhook_url refused" in refused.json()["error"]["message"], url
        assert upload(alice, clips[0].path, priority="soon").status_code == 400
        assert upload(alice, clips[0].path, template="nope").status_code == 400


def test_the_openai_sdk_transcribes_through_the_platform(server, clips):
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=ALICE, max_retries=0, timeout=300)
    clip = clips[5].path
    with open(clip, "rb") as audio:
        text = client.audio.transcriptions.create(model="whisper-1", file=audio, response_format="text")
    assert isinstance(text, str) and len(text.split()) >= 3
    with open(clip, "rb") as audio:
        verbose = client.audio.transcriptions.create(model="whisper-1", file=audio, response_format="verbose_json")
    assert verbose.text.strip() == text.strip() and verbose.duration > 0 and verbose.segments
    assert all(s.end >= s.start for s in verbose.segments) and verbose.language == "english"
    with open(clip, "rb") as audio:
        plain = client.audio.transcriptions.create(model="whisper-1", file=audio)
    assert plain.text.strip() == text.strip()
    with open(clip, "rb") as audio:
        srt = client.audio.transcriptions.create(model="whisper-1", file=audio, response_format="srt")
    assert SRT_BLOCK.search(srt)
    with open(clip, "rb") as audio:
        vtt = client.audio.transcriptions.create(model="whisper-1", file=audio, response_format="vtt")
    assert vtt.startswith("WEBVTT") and VTT_CUE.search(vtt)
    with server.client() as alice:
        listed = alice.get("/v1/recordings", params={"status": "done"}).json()["data"]
        assert clip.name in [d["file"] for d in listed], "recorded like any recording"
    with pytest.raises(openai.BadRequestError):
        client.audio.transcriptions.create(model="whisper-1", file=("noise.mp3", b"not audio at all" * 100))


def test_uploads_stream_through_a_flat_memory_and_stop_at_the_size_limit(tmp_path):
    """400 MB in: accepted with the server's memory flat; past DIARY_MAX_FILE_BYTES: 413, nothing kept."""
    big = Server(tmp_path, DIARY_MAX_FILE_BYTES=str(450 * 1024**2), DIARY_API_BYTES_PER_HOUR="0")
    try:
        with big.client() as alice:
            alice.get("/v1/recordings")
            before = big.rss_bytes()
            accepted = _stream_upload(big, 400 * 1024**2)
            assert accepted.status_code == 202, accepted.text
            grown = big.rss_bytes() - before
            assert grown < 60 * 1024**2, f"the server grew by {grown / 1024**2:.0f} MB for a 400 MB upload"
            refused = _stream_upload(big, 460 * 1024**2)
            assert refused.status_code == 413 and refused.json()["error"]["type"] == "too_large"
        landed = [p for p in Path(big.env["DIARY_LANDING"]).rglob("*") if p.is_file()]
        assert len(landed) == 1 and landed[0].stat().st_size == 400 * 1024**2, "the refused upload left nothing behind"
    finally:
        big.stop()


def _stream_upload(server: Server, size: int) -> httpx2.Response:
    """A multipart body produced as it is sent, so the client holds no more than a chunk of it either."""
    boundary = "diary-test-boundary"
    chunk = os.urandom(1024 * 1024)

    def body():
        yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big-{size}.wav\"\r\n"
               "Content-Type: audio/wav\r\n\r\n").encode()
        for _ in range(size // len(chunk)):
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    with httpx2.Client(base_url=server.url, timeout=120) as client:
        return client.post("/v1/recordings", content=body(), headers={
            "Authorization": f"Bearer {ALICE}", "Content-Type": f"multipart/form-data; boundary={boundary}"})


def test_too_many_requests_are_told_when_to_retry(tmp_path):
    limited = Server(tmp_path, DIARY_API_REQUESTS_PER_MINUTE="5")
    try:
        with limited.client() as alice, limited.client(BOB) as bob:
            answers = [alice.get("/v1/recordings") for _ in range(6)]
            assert [a.status_code for a in answers] == [200] * 5 + [429]
            assert 1 <= int(answers[-1].headers["Retry-After"]) <= 60
            assert answers[-1].json()["error"]["type"] == "rate_limit_exceeded"
            assert bob.get("/v1/recordings").status_code == 429, "the client IP's limit binds a second key from the same address"
        with limited.client("guessed-key-0000000000") as guesser:
            assert guesser.get("/v1/recordings").status_code == 429, "guessing keys counts against the address too"
        assert httpx2.get(f"{limited.url}/healthz").status_code == 200, "probes are never limited"
    finally:
        limited.stop()


def test_readiness_reports_a_rate_limit_store_that_does_not_answer(tmp_path, server):
    assert httpx2.get(f"{server.url}/readyz").json() == {"status": "ready", "checks": {"instance": True, "storage": True, "rate_limits": True}}
    broken = Server(tmp_path, DIARY_REDIS_URL="redis://127.0.0.1:1/0")
    try:
        answer = httpx2.get(f"{broken.url}/readyz")
        assert answer.status_code == 200 and answer.json()["checks"]["rate_limits"] is False, (
            "limits fail open: a Redis outage must not take every replica out of rotation")
        with broken.client() as alice:
            assert alice.get("/v1/recordings").status_code == 200
    finally:
        broken.stop()


def test_webhook_secret_is_derived_from_the_key_the_user_holds():
    assert webhook_secret(ALICE) == webhook_secret(ALICE) != webhook_secret(BOB)


def test_a_webhook_gets_the_signed_status_document_when_the_recording_is_done(server, clips, monkeypatch):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import threading

    from diary_platform.batch.webhooks import webhooks_sensor
    from diary_platform.domain.webhooks import verify

    received = []

    class Receiver(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            received.append((dict(self.headers), self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        with server.client() as alice:
            answer = upload(alice, clips[6].path, webhook_url=f"http://127.0.0.1:{receiver.server_port}/hook")
            assert answer.status_code == 202, answer.text
        monkeypatch.setenv("DIARY_API_KEYS", server.env["DIARY_API_KEYS"])
        monkeypatch.setenv("DIARY_API_ALLOW_LOOPBACK_WEBHOOKS", "true")
        settings = server.settings(monkeypatch)
        sensor = webhooks_sensor(settings)
        with dg.instance_for_test() as instance:
            process_landed(settings, instance)
            with dg.build_sensor_context(instance=instance, resources=build_resources(settings)) as context:
                sensor(context)
    finally:
        receiver.shutdown()
        receiver.server_close()
    [(headers, body)] = received
    assert verify(body, headers, webhook_secret(ALICE), time.time())
    assert not verify(body, headers, webhook_secret(BOB), time.time())
    document = json.loads(body)
    assert (document["id"], document["status"]) == (answer.json()["id"], "done") and document["transcript"]["text"]


def test_the_openapi_schema_holds_under_generated_requests(tmp_path, monkeypatch):
    """Schemathesis over every operation of /openapi.json, in process: no answer is a 500."""
    import schemathesis
    from hypothesis import HealthCheck, given
    from hypothesis import settings as hypothesis_settings

    from diary_platform.api.app import create_app

    monkeypatch.setenv("DIARY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DIARY_API_KEYS", f"alice:{ALICE}")
    monkeypatch.setenv("DIARY_API_REQUESTS_PER_MINUTE", "0")
    app = create_app(Settings())
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures = []
    for operation in schema.get_all_operations():
        operation = operation.ok()
        if operation.path == "/v1/audio/transcriptions":
            continue  # a real transcription per example: covered by the SDK test above

        @hypothesis_settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def exercise(case):
            response = case.call(headers={"Authorization": f"Bearer {ALICE}"})
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:200]}")

        exercise()
    assert failures == []


def test_with_a_landing_bucket_an_upload_becomes_one_new_object_there(tmp_path, gcs_bucket, clips):
    """DIARY_LANDING_URI: the upload is created as an object under <user>/ with the storage client (never
    overwritten or deleted), where the bucket sensor, or a folder sensor over a mount of the bucket, finds it."""
    client, bucket = gcs_bucket
    bucketed = Server(tmp_path, DIARY_LANDING_URI=f"gs://{bucket.name}", DIARY_GCS_PROJECT="diary-test")
    try:
        with bucketed.client() as alice:
            first = upload(alice, clips[0].path, priority="bulk")
            again = upload(alice, clips[0].path)
        assert first.status_code == again.status_code == 202 and first.json()["id"] == again.json()["id"]
        [blob] = list(client.list_blobs(bucket.name))
        assert blob.name.startswith("alice/bulk/") and blob.name.endswith(clips[0].path.name)
        assert blob.download_as_bytes() == clips[0].path.read_bytes()
        assert not [p for p in Path(bucketed.env["DIARY_LANDING"]).rglob("*") if p.is_file()], "nothing in the landing folder"
    finally:
        bucketed.stop()


def test_the_uploads_trace_leads_on_to_the_sensor_tick_that_batches_it(server, clips, monkeypatch, telemetry_readers):
    """The client's W3C traceparent is continued by the API's request span; the landing sensor's tick links to it."""
    from diary_platform.domain.shared_state import open_shared_state

    trace_id = os.urandom(16).hex()
    with server.client() as alice:
        answer = alice.post("/v1/recordings", files={"file": (clips[7].path.name, clips[7].path.read_bytes())},
                            headers={"traceparent": f"00-{trace_id}-{os.urandom(8).hex()}-01"})
    assert answer.status_code == 202, answer.text
    settings = server.settings(monkeypatch)
    record = open_shared_state(settings.data_dir).api_uploads.get("alice", answer.json()["id"])
    assert record.traceparent.split("-")[1] == trace_id, "the API's span continues the client's trace"
    with dg.instance_for_test() as instance:
        process_landed(settings, instance)
    ticks = [s for s in telemetry_readers.spans.get_finished_spans() if s.name == "landing_sensor tick" and s.links]
    linked = {format(link.context.trace_id, "032x") for tick in ticks for link in tick.links}
    assert trace_id in linked
