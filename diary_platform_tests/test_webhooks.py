"""Webhooks: the URL rules that keep a user's URL from reaching the platform's own network, the signature a
receiver checks, the delivery records on both backends, and the dispatcher against real HTTP(S) receivers
on 127.0.0.1 (time moves by passing a later `now`; nothing sleeps)."""

import json
import socket
import ssl
import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from diary_platform.domain.state_database import StateDatabase
from diary_platform.domain.webhooks import (
    DELIVERED,
    GAVE_UP,
    MAX_ATTEMPTS,
    RETRYING,
    WAITING,
    WEBHOOK_MIGRATION,
    DeliveryRound,
    FileWebhookDeliveries,
    PostgresWebhookDeliveries,
    UnresolvableWebhookHost,
    UnsafeWebhookUrl,
    check_url,
    deliver_round,
    new_delivery,
    sign,
    verify,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
SECRET = b"alice's webhook secret"
DONE = {"recording_id": "rec-1", "status": "done", "user": "alice", "note_title": "A walk by the river"}
PUBLIC = "93.184.215.14"


def resolves_to(*addresses: str):
    """A resolver that answers every name with `addresses`, as getaddrinfo shapes its answer."""

    def resolve(host, port, *args, **kwargs):
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]

    return resolve


def literal_or_public(host, port, *args, **kwargs):
    """IP literals as the system reads them (numeric forms included), any name as a public address: no DNS."""
    try:
        return socket.getaddrinfo(host, port, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        return resolves_to(PUBLIC)(host, port)


def unresolvable(host, port, *args, **kwargs):
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


# --- check_url ---------------------------------------------------------------------------------------------


def test_a_public_https_url_is_accepted_and_normalised():
    assert check_url("https://Hooks.Example.COM/diary?x=1#part", resolve=literal_or_public) == "https://hooks.example.com/diary?x=1"
    assert check_url("https://bücher.example/hook", resolve=literal_or_public) == "https://xn--bcher-kva.example/hook"


@pytest.mark.parametrize(
    "url, why",
    [
        ("http://169.254.169.254/latest/meta-data", "metadata service"),
        ("https://169.254.169.254/", "metadata service"),
        ("https://[::ffff:169.254.169.254]/", "metadata service"),
        ("https://[fd00:ec2::254]/", "metadata service"),
        ("https://metadata.google.internal/computeMetadata/v1/", "metadata service"),
        ("https://METADATA.google.internal./", "metadata service"),
        ("https://metadata/", "metadata service"),
        ("https://169.254.1.1/", "link-local"),
        ("https://[fe80::1]/", "link-local"),
        ("https://10.0.0.1/", "private"),
        ("https://172.16.5.4/", "private"),
        ("https://192.168.1.1/", "private"),
        ("https://[fd12:3456::1]/", "private"),
        ("https://[::ffff:10.0.0.1]/", "private"),
        ("https://127.0.0.1/", "loopback"),
        ("https://2130706433/", "loopback"),
        ("https://[::1]/", "loopback"),
        ("http://127.0.0.1:8000/", "loopback"),
        ("https://0.0.0.0/", "unspecified"),
        ("https://224.0.0.1/", "multicast"),
        ("https://240.0.0.1/", "reserved"),
        ("https://100.64.0.1/", "not a public address"),
        ("file:///etc/passwd", "only https"),
        ("gopher://example.com:70/_GET%20/", "only https"),
        ("ftp://example.com/", "only https"),
        ("data:text/plain,hello", "only https"),
        ("http://example.com/hook", "only https"),
        ("//example.com/hook", "not an absolute URL"),
        ("https://user:pw@example.com/", "credentials"),
        ("https://example.com\\@10.0.0.1/", "credentials"),
    ],
)
def test_urls_that_could_reach_the_platforms_own_network_are_refused_with_the_reason(url, why):
    with pytest.raises(UnsafeWebhookUrl, match=why):
        check_url(url, resolve=literal_or_public)


def test_every_address_a_name_resolves_to_is_checked_not_only_the_first():
    with pytest.raises(UnsafeWebhookUrl, match=r"hooks\.example\.com resolves to 10\.1\.2\.3, a private address"):
        check_url("https://hooks.example.com/", resolve=resolves_to(PUBLIC, "10.1.2.3"))


def test_a_name_that_does_not_resolve_is_refused_as_unresolvable():
    with pytest.raises(UnresolvableWebhookHost, match="does not resolve"):
        check_url("https://nowhere.example/", resolve=unresolvable)


def test_plain_http_to_loopback_only_with_the_development_allowance():
    assert check_url("http://127.0.0.1:8000/hook", allow_loopback_http=True) == "http://127.0.0.1:8000/hook"
    assert check_url("http://localhost:8000/", allow_loopback_http=True, resolve=resolves_to("127.0.0.1", "::1"))
    with pytest.raises(UnsafeWebhookUrl, match="only https"):
        check_url("http://half.example/", allow_loopback_http=True, resolve=resolves_to("127.0.0.1", PUBLIC))
    with pytest.raises(UnsafeWebhookUrl, match="metadata service"):
        check_url("http://169.254.169.254/", allow_loopback_http=True)


# --- signatures --------------------------------------------------------------------------------------------


def test_a_signature_verifies_and_a_tampered_body_wrong_secret_or_old_timestamp_does_not():
    body, at = b'{"status": "done"}', 1_800_000_000
    headers = sign(body, SECRET, at)
    assert headers["X-Diary-Timestamp"] == str(at) and headers["X-Diary-Signature"].startswith("v1=")
    assert verify(body, headers, SECRET, now=at + 299)
    assert verify(body, {name.lower(): value for name, value in headers.items()}, SECRET, now=at), "header names are case-insensitive"
    assert not verify(b'{"status": "quarantined"}', headers, SECRET, now=at)
    assert not verify(body, headers, b"another secret", now=at)
    assert not verify(body, headers, SECRET, now=at + 301), "stale: a captured request replayed later"
    assert not verify(body, headers, SECRET, now=at - 301), "from the future"
    assert not verify(body, {**headers, "X-Diary-Timestamp": str(at + 1)}, SECRET, now=at), "the timestamp is signed"
    assert not verify(body, {**headers, "X-Diary-Timestamp": "soon"}, SECRET, now=at)
    assert not verify(body, {}, SECRET, now=at)
    rotated = {**headers, "X-Diary-Signature": f"{sign(body, b'old secret', at)['X-Diary-Signature']},{headers['X-Diary-Signature']}"}
    assert verify(body, rotated, SECRET, now=at), "signed with the old and the new secret while rotating"


# --- delivery records, both backends -----------------------------------------------------------------------


@pytest.fixture(params=["files", "postgres"])
def store(request, tmp_path):
    if request.param == "files":
        yield FileWebhookDeliveries(tmp_path / "webhooks")
        return
    fresh = request.getfixturevalue("postgres_database")
    database = StateDatabase(f"postgresql://{fresh['user']}@{fresh['host']}:{fresh['port']}/{fresh['dbname']}")
    database.migrate()  # once WEBHOOK_MIGRATION is one of MIGRATIONS, this already made the table
    for statement in WEBHOOK_MIGRATION:
        database.execute(statement)
    yield PostgresWebhookDeliveries(database)
    database.engine.dispose()


def test_registering_the_same_recording_and_url_again_keeps_the_one_delivery(store):
    first = new_delivery("alice", "rec-1", "https://hooks.example.com/a", NOW)
    assert first.id.startswith("wh-") and store.register(first) == first
    assert store.register(new_delivery("alice", "rec-1", "https://hooks.example.com/a", NOW + timedelta(hours=1))) == first
    other_url = store.register(new_delivery("alice", "rec-1", "https://hooks.example.com/b", NOW + timedelta(seconds=1)))
    store.register(new_delivery("alice", "rec-2", "https://hooks.example.com/a", NOW))
    store.register(new_delivery("bob", "rec-1", "https://hooks.example.com/a", NOW))
    assert store.of_recording("alice", "rec-1") == [first, other_url]
    assert store.get("wh-unknown") is None


def test_a_delivered_or_given_up_record_is_never_reopened(store):
    for final in (DELIVERED, GAVE_UP):
        record = store.register(new_delivery("alice", f"rec-{final}", "https://hooks.example.com/", NOW))
        finished = replace(record, status=final, attempts=2, first_attempt_at=NOW, last_error="x", response_status=200, delivered_at=NOW)
        store.save(finished)
        store.save(replace(finished, status=RETRYING, next_attempt_at=NOW))
        assert store.get(record.id) == finished, "a late round's save is ignored; every field survives the round trip"
    unregistered = new_delivery("alice", "rec-new", "https://hooks.example.com/", NOW)
    store.save(unregistered)
    assert store.get(unregistered.id) == unregistered


def test_due_takes_waiting_and_retrying_records_the_most_overdue_first(store):
    def at(name: str, minutes: int, status: str):
        record = new_delivery("alice", name, "https://hooks.example.com/", NOW)
        store.save(replace(record, status=status, next_attempt_at=NOW + timedelta(minutes=minutes)))
        return record.id

    recent, oldest = at("recent", -1, RETRYING), at("oldest", -10, WAITING)
    at("later", 1, WAITING), at("delivered", -20, DELIVERED), at("gave-up", -30, GAVE_UP)
    assert [d.id for d in store.due(NOW, 10)] == [oldest, recent]
    assert [d.id for d in store.due(NOW, 1)] == [oldest]


# --- the dispatcher against real receivers -----------------------------------------------------------------


class Receiver:
    """A real HTTP(S) server on 127.0.0.1 that records each request; `answer(n)` gives the status and headers
    of the n-th answer (from 1)."""

    def __init__(self, answer, tls: ssl.SSLContext | None = None):
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((self.path, {name.lower(): value for name, value in self.headers.items()}, body))
                status, headers = answer(len(receiver.requests))
                self.send_response(status)
                for name, value in {**headers, "Content-Length": "0"}.items():
                    self.send_header(name, value)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()


def ok(n: int):
    return 200, {}


@pytest.fixture
def receivers():
    started: list[Receiver] = []

    def start(answer=ok, tls=None) -> Receiver:
        started.append(Receiver(answer, tls))
        return started[-1]

    yield start
    for receiver in started:
        receiver.server.shutdown()
        receiver.server.server_close()


@pytest.fixture
def files(tmp_path):
    return FileWebhookDeliveries(tmp_path / "webhooks")


def run_round(deliveries, now, status=lambda user, recording_id: DONE, **options) -> DeliveryRound:
    return deliver_round(deliveries, status, lambda user: SECRET, now, allow_loopback_http=True, **options)


def registered(deliveries, url: str, recording_id: str = "rec-1", resolve=literal_or_public):
    """A delivery as an upload registers it: its URL checked then."""
    return deliveries.register(new_delivery("alice", recording_id, check_url(url, allow_loopback_http=True, resolve=resolve), NOW))


def test_a_final_recording_is_delivered_signed_on_the_first_try(files, receivers):
    receiver = receivers()
    delivery = registered(files, receiver.url)
    assert run_round(files, NOW) == DeliveryRound(delivered=1)
    [(path, headers, body)] = receiver.requests
    assert path == "/hook" and json.loads(body) == DONE and body == json.dumps(DONE, sort_keys=True).encode()
    assert verify(body, headers, SECRET, now=NOW.timestamp())
    assert headers["content-type"] == "application/json" and headers["user-agent"] == "diary-platform-webhooks"
    assert headers["x-diary-delivery"] == delivery.id
    stored = files.get(delivery.id)
    assert (stored.status, stored.attempts, stored.response_status, stored.delivered_at) == (DELIVERED, 1, 200, NOW)
    assert registered(files, receiver.url) == stored, "the same upload again makes no second delivery"
    assert run_round(files, NOW + timedelta(days=1)) == DeliveryRound() and len(receiver.requests) == 1


def test_a_failing_receiver_is_retried_with_backoff_and_delivered_on_the_third_attempt(store, receivers):
    receiver = receivers(lambda n: (500, {}) if n <= 2 else (200, {}))
    delivery = registered(store, receiver.url)
    assert run_round(store, NOW) == DeliveryRound(retried=1)
    first = store.get(delivery.id)
    assert (first.status, first.attempts, first.next_attempt_at) == (RETRYING, 1, NOW + timedelta(seconds=30))
    assert "500" in first.last_error
    assert run_round(store, NOW + timedelta(seconds=29)) == DeliveryRound(), "not due before its backoff"
    assert run_round(store, NOW + timedelta(seconds=30)) == DeliveryRound(retried=1)
    assert store.get(delivery.id).next_attempt_at == NOW + timedelta(seconds=90), "30 s, then 60 s"
    assert run_round(store, NOW + timedelta(seconds=90)) == DeliveryRound(delivered=1)
    done = store.get(delivery.id)
    assert (done.status, done.attempts, done.first_attempt_at, done.last_error) == (DELIVERED, 3, NOW, None)
    assert {headers["x-diary-delivery"] for _, headers, _ in receiver.requests} == {delivery.id}
    assert len(receiver.requests) == 3


def test_a_receiver_that_always_fails_is_given_up_after_max_attempts(files, receivers):
    receiver = receivers(lambda n: (503, {}))
    delivery = registered(files, receiver.url)
    when, waits = NOW, []
    while files.get(delivery.id).status != GAVE_UP:
        run_round(files, when)
        waits.append((files.get(delivery.id).next_attempt_at - when).total_seconds())
        when = files.get(delivery.id).next_attempt_at
    gave_up = files.get(delivery.id)
    assert gave_up.attempts == MAX_ATTEMPTS == len(receiver.requests) and "503" in gave_up.last_error
    assert waits[:-1] == [30.0 * 2**n for n in range(MAX_ATTEMPTS - 1)]
    assert files.due(NOW + timedelta(days=30), 10) == []


def test_retrying_stops_a_day_after_the_first_attempt(files, receivers):
    receiver = receivers(lambda n: (500, {}))
    delivery = registered(files, receiver.url)
    run_round(files, NOW)
    assert run_round(files, NOW + timedelta(hours=25)) == DeliveryRound(gave_up=1)
    assert files.get(delivery.id).attempts == 2 == len(receiver.requests)


def test_a_redirect_is_not_followed_and_counts_as_a_failure(files, receivers):
    elsewhere = receivers()
    redirecting = receivers(lambda n: (302, {"Location": elsewhere.url}))
    delivery = registered(files, redirecting.url)
    assert run_round(files, NOW) == DeliveryRound(retried=1)
    assert len(redirecting.requests) == 1 and elsewhere.requests == []
    stored = files.get(delivery.id)
    assert (stored.status, stored.response_status) == (RETRYING, 302) and "not followed" in stored.last_error


def test_a_recording_not_final_yet_waits_without_a_request_or_an_attempt(files, receivers):
    receiver = receivers()
    transcribing, unknown = registered(files, receiver.url, "rec-1"), registered(files, receiver.url, "rec-2")
    statuses = {"rec-1": {"status": "transcribing"}, "rec-2": None}
    status = lambda user, recording_id: statuses[recording_id]  # noqa: E731
    assert run_round(files, NOW, status=status) == DeliveryRound(waiting=2)
    assert receiver.requests == []
    for delivery in (transcribing, unknown):
        stored = files.get(delivery.id)
        assert (stored.status, stored.attempts, stored.next_attempt_at) == (WAITING, 0, NOW + timedelta(seconds=15))
    statuses["rec-1"] = {**DONE, "status": "quarantined"}
    assert run_round(files, NOW + timedelta(seconds=15), status=status) == DeliveryRound(delivered=1, waiting=1)
    assert json.loads(receiver.requests[0][2])["status"] == "quarantined"
    assert run_round(files, NOW + timedelta(days=3), status=status) == DeliveryRound(gave_up=1), "rec-2 never became final"


def test_a_url_that_became_unsafe_since_upload_is_given_up_without_a_request(files, receivers):
    delivery = registered(files, "https://hooks.example.com/diary")
    posted = []
    rebound = run_round(files, NOW, resolve=resolves_to(PUBLIC, "169.254.169.254"), post=posted.append)
    assert rebound == DeliveryRound(gave_up=1) and posted == []
    assert "169.254.169.254" in files.get(delivery.id).last_error
    receiver = receivers()
    local = registered(files, receiver.url)
    assert deliver_round(files, lambda user, recording_id: DONE, lambda user: SECRET, NOW) == DeliveryRound(gave_up=1), "no allowance"
    assert receiver.requests == [] and "loopback" in files.get(local.id).last_error


def test_a_name_that_stops_resolving_is_retried_not_given_up(files):
    delivery = registered(files, "https://hooks.example.com/diary")
    assert run_round(files, NOW, resolve=unresolvable) == DeliveryRound(retried=1)
    assert files.get(delivery.id).attempts == 1 and "does not resolve" in files.get(delivery.id).last_error


def test_the_post_goes_to_the_address_that_was_checked_under_the_hosts_name(files, receivers):
    """`.invalid` never resolves: the request can only arrive if it connects to the address the check approved."""
    receiver = receivers()
    registered(files, f"http://receiver.invalid:{receiver.port}/hook", resolve=resolves_to("127.0.0.1"))
    assert run_round(files, NOW, resolve=resolves_to("127.0.0.1")) == DeliveryRound(delivered=1)
    [(_, headers, _)] = receiver.requests
    assert headers["host"] == f"receiver.invalid:{receiver.port}"


def test_over_tls_the_pinned_connection_checks_the_certificate_against_the_hosts_name(files, receivers, tmp_path):
    authority, tls = _certificates(tmp_path, "hooks.invalid")
    receiver = receivers(tls=tls)
    right = registered(files, f"https://hooks.invalid:{receiver.port}/hook", "rec-1")
    wrong = registered(files, f"https://other.invalid:{receiver.port}/hook", "rec-2")
    with httpx2.Client(verify=authority, trust_env=False) as client:
        round_ = run_round(files, NOW, resolve=resolves_to("127.0.0.1"), post=lambda request: client.send(request).status_code)
    assert round_ == DeliveryRound(delivered=1, retried=1)
    assert files.get(right.id).status == DELIVERED and len(receiver.requests) == 1
    assert "certificate" in files.get(wrong.id).last_error.lower()


def _certificates(folder, name: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A throwaway certificate authority and a server certificate for `name`: (client context trusting the
    authority, server context)."""
    def certificate(subject: str, key, issuer: str, issuer_key, extensions):
        builder = x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        builder = builder.issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)])).public_key(key.public_key())
        start = datetime.now(timezone.utc) - timedelta(hours=1)
        builder = builder.serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(start + timedelta(days=1))
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(issuer_key, hashes.SHA256())

    authority_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    authority_extensions = [(x509.BasicConstraints(ca=True, path_length=None), True)]
    authority = certificate("test authority", authority_key, "test authority", authority_key, authority_extensions)
    server = certificate(name, server_key, "test authority", authority_key, [(x509.SubjectAlternativeName([x509.DNSName(name)]), False)])
    (folder / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    key = server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (folder / "server.key").write_bytes(key)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(folder / "server.pem", folder / "server.key")
    client_context = ssl.create_default_context(cadata=authority.public_bytes(serialization.Encoding.PEM).decode())
    return client_context, server_context
