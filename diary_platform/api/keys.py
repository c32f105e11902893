"""API keys: `user:key` pairs from DIARY_API_KEYS (comma-separated) and/or a keys file (one pair a line).

Only SHA-256 digests of the keys stay in memory after start; a presented key is hashed and looked up,
so the comparison never touches the secret itself. Each user also gets a webhook secret derived from
their key (HMAC-SHA256 of "diary-webhooks" under the key): the user can compute it, the platform need
not store another secret.
"""

import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path

USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MIN_KEY_LENGTH = 16


class KeysError(ValueError):
    """The keys configuration cannot be used; the message says which entry and why (never the key)."""


def webhook_secret(key: str) -> bytes:
    return hmac.new(key.encode(), b"diary-webhooks", hashlib.sha256).hexdigest().encode()


@dataclass(frozen=True)
class ApiKeys:
    users_by_digest: dict[str, str]
    webhook_secrets: dict[str, bytes]

    @classmethod
    def parse(cls, pairs: str, keys_file: Path | None = None) -> "ApiKeys":
        entries = [("DIARY_API_KEYS", i + 1, p.strip()) for i, p in enumerate(pairs.split(",")) if p.strip()]
        if keys_file is not None:
            try:
                lines = Path(keys_file).read_text().splitlines()
            except OSError as error:
                raise KeysError(f"{keys_file}: cannot be read ({error.strerror})") from None
            entries += [(str(keys_file), i + 1, line.strip()) for i, line in enumerate(lines) if line.strip() and not line.startswith("#")]
        users: dict[str, str] = {}
        secrets: dict[str, bytes] = {}
        for source, number, entry in entries:
            user, _, key = entry.partition(":")
            if not USER_NAME.match(user):
                raise KeysError(f"{source} entry {number}: the user name must be letters, digits, '.', '_' or '-'")
            if len(key) < MIN_KEY_LENGTH:
                raise KeysError(f"{source} entry {number} ({user}): a key must be at least {MIN_KEY_LENGTH} characters")
            users[_digest(key)] = user
            secrets.setdefault(user, webhook_secret(key))
        return cls(users, secrets)

    def user_of(self, key: str) -> str | None:
        return self.users_by_digest.get(_digest(key))


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
