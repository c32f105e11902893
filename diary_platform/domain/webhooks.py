"""Webhooks: when a recording reaches a final status, its status document is POSTed, signed, to the URL its
uploader gave; retried with backoff and recorded (files, one JSON per delivery, or Postgres
`diary_webhook_deliveries`, like the rest of the shared state).

Signature (Stripe's scheme, with the timestamp in its own header). Each POST carries

    X-Diary-Timestamp: <unix seconds when it was signed>
    X-Diary-Signature: v1=<hex HMAC-SHA256(secret, f"{timestamp}.".encode() + body)>
    X-Diary-Delivery: <delivery id, the same on every retry: deduplicate on it>

A receiver recomputes the HMAC over the raw body with its secret, compares in constant time, and refuses a
timestamp more than five minutes from its clock (a captured request cannot be replayed later); `verify` does
exactly that and may be copied as is. Several comma-separated `v1=` values are accepted, so a secret can be
rotated by signing with both.

URLs are the server-side request forgery surface: a webhook makes the platform POST wherever a user says.
`check_url` takes only https (plain http only to loopback, for local development), no credentials in the
URL, no cloud metadata host names, and a host all of whose addresses are public; it runs at upload and again
right before each POST. The POST then connects to an address that check approved (the URL's host is swapped
for it; the Host header, TLS SNI and certificate check keep the name), so a DNS answer that changes between
the check and the connect (rebinding) is never used. Redirects are never followed: a 3xx is a failed attempt.
What remains: no proxy is used (an egress proxy would resolve names again by itself), and the 10 s timeout is
per network read, so a receiver that trickles its response headers can hold one round for longer.
"""

import fcntl
import hashlib
import hmac
import ipaddress
import json
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import httpx2

from diary_platform.domain.store.layout import write_text_atomic

if TYPE_CHECKING:  # state_database.py imports WEBHOOK_MIGRATION from here
    from diary_platform.domain.state_database import StateDatabase

WAITING, RETRYING, DELIVERED, GAVE_UP = "waiting", "retrying", "delivered", "gave_up"
DUE = (WAITING, RETRYING)
FINISHED = (DELIVERED, GAVE_UP)
FINAL_RECORDING_STATUSES = ("done", "quarantined")

MAX_ATTEMPTS = 8
RETRY_FOR = timedelta(hours=24)
RECHECK_WAITING = timedelta(seconds=15)
# A recording can wait a day or more for its notes in a provider batch; one never final stops being checked.
WAIT_FOR_FINAL_STATUS = timedelta(days=3)
FIRST_BACKOFF_SECONDS = 30.0
MAX_BACKOFF_SECONDS = 3600.0
POST_TIMEOUT_SECONDS = 10.0
USER_AGENT = "diary-platform-webhooks"
SIGNATURE_TOLERANCE_SECONDS = 300

WEBHOOK_MIGRATION: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS diary_webhook_deliveries (
        id text PRIMARY KEY,
        status text NOT NULL,
        next_attempt_at timestamptz NOT NULL,
        user_name text NOT NULL,
        recording_id text NOT NULL,
        record jsonb NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS diary_webhook_deliveries_due ON diary_webhook_deliveries (status, next_attempt_at)",
    "CREATE INDEX IF NOT EXISTS diary_webhook_deliveries_by_recording ON diary_webhook_deliveries (user_name, recording_id)",
)

# Names that reach a cloud's instance metadata service whatever they resolve to from where the check runs.
METADATA_HOSTS = frozenset({"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"})
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})


class UnsafeWebhookUrl(ValueError):
    """The URL must not be called; the message says why."""


class UnresolvableWebhookHost(UnsafeWebhookUrl):
    """The host has no address now: refused at upload, but only a failed attempt at delivery (DNS may be back)."""


def check_url(url: str, allow_loopback_http: bool = False, resolve=socket.getaddrinfo) -> str:
    """The URL, normalised (lower-case host, IDNA, no fragment), if a webhook may be sent to it; else
    UnsafeWebhookUrl. Every address the host resolves to is checked, not just the first."""
    return str(_checked(url, allow_loopback_http, resolve)[0])


def _checked(url: str, allow_loopback_http: bool, resolve) -> tuple[httpx2.URL, list[str]]:
    """The parsed URL and the addresses its host resolves to, all of them allowed. Parsed by the same
    parser that sends the request, so the check and the connect cannot read the URL differently."""
    try:
        parsed = httpx2.URL(url)
    except (httpx2.InvalidURL, TypeError) as error:
        raise UnsafeWebhookUrl(f"not a URL: {error}") from None
    if parsed.scheme not in ("https", "http"):
        raise UnsafeWebhookUrl(f"only https URLs are allowed, not {parsed.scheme}:" if parsed.scheme else "not an absolute URL")
    if parsed.userinfo:
        raise UnsafeWebhookUrl("credentials in the URL are not allowed (the signature authenticates the platform)")
    host = parsed.raw_host.decode("ascii").rstrip(".")  # IDNA-encoded, as it will be resolved and sent
    if not host:
        raise UnsafeWebhookUrl("the URL has no host")
    if host in METADATA_HOSTS:
        raise UnsafeWebhookUrl(f"{host} is a cloud metadata service")
    try:
        answers = resolve(host, parsed.port or (443 if parsed.scheme == "https" else 80))
    except (OSError, UnicodeError) as error:
        raise UnresolvableWebhookHost(f"{host} does not resolve ({error})") from None
    addresses = list(dict.fromkeys(answer[4][0] for answer in answers))
    if not addresses:
        raise UnresolvableWebhookHost(f"{host} does not resolve")
    loopback = {address: _embedded_ipv4(ipaddress.ip_address(address)).is_loopback for address in addresses}
    for address in addresses:
        refusal = None if allow_loopback_http and loopback[address] else _refusal(ipaddress.ip_address(address))
        if refusal:
            raise UnsafeWebhookUrl(f"{host} resolves to {address}, {refusal}")
    if parsed.scheme == "http" and not (allow_loopback_http and all(loopback.values())):
        raise UnsafeWebhookUrl("only https URLs are allowed (plain http only to loopback, in development)")
    return parsed.copy_with(fragment=None), addresses


def _embedded_ipv4(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The IPv4 address an IPv6 one stands for (IPv4-mapped ::ffff:a.b.c.d, 6to4 2002::/16), else the address."""
    if isinstance(ip, ipaddress.IPv6Address):
        return ip.ipv4_mapped or ip.sixtofour or ip
    return ip


def _refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why no webhook may go to `ip`, or None if it is a public unicast address."""
    ip = _embedded_ipv4(ip)
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata service address"
    for flagged, reason in (
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address (where cloud metadata services live)"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_reserved, "a reserved address"),
        (ip.is_private, "a private address"),
        (not ip.is_global, "not a public address"),
    ):
        if flagged:
            return reason
    return None


def sign(body: bytes, secret: bytes, timestamp: int) -> dict[str, str]:
    """The signature headers of `body` at `timestamp` (unix seconds)."""
    digest = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Diary-Timestamp": str(timestamp), "X-Diary-Signature": f"v1={digest}"}


def verify(body: bytes, headers: Mapping[str, str], secret: bytes, now: float, tolerance_seconds: int = SIGNATURE_TOLERANCE_SECONDS) -> bool:
    """Whether `body` with these headers was signed with `secret` within `tolerance_seconds` of `now` (unix
    seconds), either way. `headers`: any mapping with .items() (names compared case-insensitively)."""
    named = {name.lower(): value for name, value in headers.items()}
    timestamp, signatures = named.get("x-diary-timestamp", ""), named.get("x-diary-signature", "")
    if not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance_seconds:
        return False
    expected = sign(body, secret, int(timestamp))["X-Diary-Signature"]
    return any(hmac.compare_digest(expected.encode(), candidate.strip().encode()) for candidate in signatures.split(","))


@dataclass(frozen=True)
class Delivery:
    id: str
    user: str
    recording_id: str
    url: str
    created_at: datetime
    next_attempt_at: datetime
    status: str = WAITING
    attempts: int = 0
    first_attempt_at: datetime | None = None
    last_error: str | None = None
    response_status: int | None = None
    delivered_at: datetime | None = None

    def __post_init__(self):
        if self.created_at.tzinfo is None or self.next_attempt_at.tzinfo is None:
            raise ValueError("delivery times must be timezone-aware (the stores compare them across machines)")

    def to_json(self) -> str:
        return json.dumps({name: value.isoformat() if isinstance(value, datetime) else value for name, value in asdict(self).items()})

    @classmethod
    def from_json(cls, text: str) -> "Delivery":
        raw = json.loads(text)
        return cls(**{name: datetime.fromisoformat(value) if name in _TIMES and value is not None else value for name, value in raw.items()})


_TIMES = ("created_at", "next_attempt_at", "first_attempt_at", "delivered_at")


def delivery_id(user: str, recording_id: str, url: str) -> str:
    """The same recording of the same user to the same URL is one delivery, however often it is uploaded."""
    digest = hashlib.sha256(json.dumps([user, recording_id, url]).encode()).hexdigest()
    return f"wh-{digest[:24]}"


def new_delivery(user: str, recording_id: str, url: str, now: datetime) -> Delivery:
    """A delivery due now; `url` as `check_url` returned it."""
    return Delivery(delivery_id(user, recording_id, url), user, recording_id, url, created_at=now, next_attempt_at=now)


class WebhookDeliveries(Protocol):
    def register(self, delivery: Delivery) -> Delivery:
        """Store `delivery` unless a record with its id exists; the stored record either way."""
        ...

    def get(self, delivery_id: str) -> Delivery | None: ...

    def save(self, delivery: Delivery) -> None:
        """Replace the record, unless it is already delivered or given up (a late round never reopens it)."""
        ...

    def due(self, now: datetime, limit: int) -> list[Delivery]:
        """Waiting or retrying records whose next attempt is due, the most overdue first."""
        ...

    def of_recording(self, user: str, recording_id: str) -> list[Delivery]:
        """The recording's deliveries (one per URL), oldest first."""
        ...


class FileWebhookDeliveries(WebhookDeliveries):
    """One JSON file per record, written under a lock (a single machine)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, delivery_id: str) -> Path:
        return self.root / f"{delivery_id}.json"

    def _locked(self):
        self.root.mkdir(parents=True, exist_ok=True)
        lock = open(self.root / ".lock", "a+")
        fcntl.flock(lock, fcntl.LOCK_EX)
        return lock

    def _all(self) -> list[Delivery]:
        return [Delivery.from_json(path.read_text()) for path in self.root.glob("wh-*.json")] if self.root.exists() else []

    def get(self, delivery_id: str) -> Delivery | None:
        try:
            return Delivery.from_json(self._path(delivery_id).read_text())
        except FileNotFoundError:
            return None

    def register(self, delivery: Delivery) -> Delivery:
        with self._locked():
            stored = self.get(delivery.id)
            if stored is not None:
                return stored
            write_text_atomic(self._path(delivery.id), delivery.to_json())
            return delivery

    def save(self, delivery: Delivery) -> None:
        with self._locked():
            stored = self.get(delivery.id)
            if stored is None or stored.status not in FINISHED:
                write_text_atomic(self._path(delivery.id), delivery.to_json())

    def due(self, now: datetime, limit: int) -> list[Delivery]:
        waiting = [d for d in self._all() if d.status in DUE and d.next_attempt_at <= now]
        return sorted(waiting, key=lambda d: d.next_attempt_at)[:limit]

    def of_recording(self, user: str, recording_id: str) -> list[Delivery]:
        return sorted((d for d in self._all() if (d.user, d.recording_id) == (user, recording_id)), key=lambda d: (d.created_at, d.id))


class PostgresWebhookDeliveries(WebhookDeliveries):
    """One row per record; status, next attempt and recording are columns so that `due` and `of_recording`
    are index scans. Needs WEBHOOK_MIGRATION applied."""

    def __init__(self, database: "StateDatabase"):
        self.database = database

    def get(self, delivery_id: str) -> Delivery | None:
        rows = self.database.rows("SELECT record FROM diary_webhook_deliveries WHERE id = :id", id=delivery_id)
        return _from_row(rows[0].record) if rows else None

    def register(self, delivery: Delivery) -> Delivery:
        self.database.execute(
            "INSERT INTO diary_webhook_deliveries (id, status, next_attempt_at, user_name, recording_id, record)"
            " VALUES (:id, :status, :next_attempt_at, :user_name, :recording_id, CAST(:record AS jsonb)) ON CONFLICT (id) DO NOTHING",
            **_columns(delivery),
        )
        return self.get(delivery.id)

    def save(self, delivery: Delivery) -> None:
        self.database.execute(
            "INSERT INTO diary_webhook_deliveries (id, status, next_attempt_at, user_name, recording_id, record)"
            " VALUES (:id, :status, :next_attempt_at, :user_name, :recording_id, CAST(:record AS jsonb))"
            " ON CONFLICT (id) DO UPDATE SET status = excluded.status, next_attempt_at = excluded.next_attempt_at, record = excluded.record"
            " WHERE diary_webhook_deliveries.status NOT IN (:delivered, :gave_up)",
            **_columns(delivery), delivered=DELIVERED, gave_up=GAVE_UP,
        )

    def due(self, now: datetime, limit: int) -> list[Delivery]:
        rows = self.database.rows(
            "SELECT record FROM diary_webhook_deliveries WHERE status IN (:waiting, :retrying) AND next_attempt_at <= :now"
            " ORDER BY next_attempt_at LIMIT :limit",
            waiting=WAITING, retrying=RETRYING, now=now, limit=limit,
        )
        return [_from_row(row.record) for row in rows]

    def of_recording(self, user: str, recording_id: str) -> list[Delivery]:
        rows = self.database.rows(
            "SELECT record FROM diary_webhook_deliveries WHERE user_name = :user_name AND recording_id = :recording_id",
            user_name=user, recording_id=recording_id,
        )
        return sorted((_from_row(row.record) for row in rows), key=lambda d: (d.created_at, d.id))


def _columns(delivery: Delivery) -> dict:
    return {
        "id": delivery.id, "status": delivery.status, "next_attempt_at": delivery.next_attempt_at,
        "user_name": delivery.user, "recording_id": delivery.recording_id, "record": delivery.to_json(),
    }


def _from_row(record) -> Delivery:
    return Delivery.from_json(record if isinstance(record, str) else json.dumps(record))


@dataclass
class DeliveryRound:
    """What one round did with the due deliveries it took."""

    delivered: int = 0
    retried: int = 0
    gave_up: int = 0
    waiting: int = 0


# Sends one prepared request without following redirects; the response's status code. Raises httpx2.HTTPError.
Post = Callable[[httpx2.Request], int]


def deliver_round(
    deliveries: WebhookDeliveries,
    status_of: Callable[[str, str], dict | None],
    secret_of: Callable[[str], bytes],
    now: datetime,
    *,
    limit: int = 50,
    seconds: float = 20.0,
    post: Post | None = None,
    allow_loopback_http: bool = False,
    resolve=socket.getaddrinfo,
) -> DeliveryRound:
    """At most `limit` due deliveries, started within about `seconds`. `status_of(user, recording_id)`: the
    recording's status document (None while unknown); `secret_of(user)`: the user's signing secret.
    `post` defaults to a client that never follows redirects, uses no proxy and opens a new connection per
    request (each TLS connection is verified for its own host name)."""
    if post is not None:
        return _deliver_due(deliveries, status_of, secret_of, now, limit, seconds, post, allow_loopback_http, resolve)
    with httpx2.Client(follow_redirects=False, trust_env=False, limits=httpx2.Limits(max_keepalive_connections=0)) as client:
        return _deliver_due(deliveries, status_of, secret_of, now, limit, seconds, _sender(client), allow_loopback_http, resolve)


def _sender(client: httpx2.Client) -> Post:
    def post(request: httpx2.Request) -> int:
        """Only the status line and headers are read: the body of the answer is of no use and may be huge."""
        response = client.send(request, stream=True, follow_redirects=False)
        response.close()
        return response.status_code

    return post


def _deliver_due(deliveries, status_of, secret_of, now, limit, seconds, post: Post, allow_loopback_http, resolve) -> DeliveryRound:
    round_ = DeliveryRound()
    deadline = time.monotonic() + seconds
    for delivery in deliveries.due(now, limit):
        if time.monotonic() > deadline:
            break
        document = status_of(delivery.user, delivery.recording_id)
        if document is None or document.get("status") not in FINAL_RECORDING_STATUSES:
            if now - delivery.created_at >= WAIT_FOR_FINAL_STATUS:
                round_.gave_up += 1
                deliveries.save(replace(delivery, status=GAVE_UP, last_error=f"the recording was not final after {WAIT_FOR_FINAL_STATUS}"))
            else:
                round_.waiting += 1
                deliveries.save(replace(delivery, next_attempt_at=now + RECHECK_WAITING))
            continue
        try:
            request = _signed_request(delivery, document, secret_of(delivery.user), now, allow_loopback_http, resolve)
        except UnresolvableWebhookHost as error:
            outcome = _failed(delivery, now, str(error))
        except UnsafeWebhookUrl as error:
            outcome = replace(delivery, status=GAVE_UP, last_error=f"refused: {error}")
        else:
            outcome = _attempt(delivery, request, post, now)
        deliveries.save(outcome)
        if outcome.status == DELIVERED:
            round_.delivered += 1
        elif outcome.status == GAVE_UP:
            round_.gave_up += 1
        else:
            round_.retried += 1
    return round_


def _signed_request(delivery: Delivery, document: dict, secret: bytes, now: datetime, allow_loopback_http: bool, resolve) -> httpx2.Request:
    """The POST of `document` for `delivery`, signed at `now`, to an address `check_url` approves just now:
    the URL names that address, the Host header and TLS name stay the host's."""
    url, addresses = _checked(delivery.url, allow_loopback_http, resolve)
    body = json.dumps(document, sort_keys=True).encode()
    headers = {
        "Host": url.netloc.decode("ascii"),
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Diary-Delivery": delivery.id,
        **sign(body, secret, int(now.timestamp())),
    }
    extensions = {"timeout": httpx2.Timeout(POST_TIMEOUT_SECONDS).as_dict(), "sni_hostname": url.raw_host.decode("ascii").rstrip(".")}
    pinned = url.copy_with(host=addresses[0])
    return httpx2.Request("POST", pinned, content=body, headers=headers, extensions=extensions)


def _attempt(delivery: Delivery, request: httpx2.Request, post: Post, now: datetime) -> Delivery:
    try:
        status = post(request)
    except httpx2.HTTPError as error:
        return _failed(delivery, now, f"{type(error).__name__}: {error}")
    if 200 <= status < 300:
        return replace(
            delivery, status=DELIVERED, attempts=delivery.attempts + 1, first_attempt_at=delivery.first_attempt_at or now,
            delivered_at=now, response_status=status, last_error=None,
        )
    redirect = " (redirects are not followed)" if 300 <= status < 400 else ""
    return replace(_failed(delivery, now, f"the receiver answered {status}{redirect}"), response_status=status)


def _failed(delivery: Delivery, now: datetime, error: str) -> Delivery:
    """One more failed attempt: retried later with exponential backoff, or given up when out of attempts or time."""
    attempts, first = delivery.attempts + 1, delivery.first_attempt_at or now
    failed = replace(delivery, attempts=attempts, first_attempt_at=first, last_error=error[:500])
    if attempts >= MAX_ATTEMPTS or now - first >= RETRY_FOR:
        return replace(failed, status=GAVE_UP)
    backoff = min(FIRST_BACKOFF_SECONDS * 2 ** (attempts - 1), MAX_BACKOFF_SECONDS)
    return replace(failed, status=RETRYING, next_attempt_at=now + timedelta(seconds=backoff))
