"""Webhook authentication (SPEC 3.3): one verifier per type behind one contract.

Rules every verifier keeps:

- It checks the raw body bytes, before anything parses them.
- Every comparison with a secret or a signature is constant-time
  (hmac.compare_digest), and every configured secret is tried, so timing tells
  neither whether nor which secret matched.
- A failure raises AuthFailure with a reason fit for a log line: never a secret,
  never the expected signature.
- It returns what the provider vouched for: its signed timestamp (for
  max_event_age) and its delivery id (the default idempotency key), if any.

The verifier applies the authentication's `scheme`: its type's, or, for generic hmac
on a header a provider owns, that provider's (models.PRESETS).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from triggerd.config.models import Authentication
from triggerd.errors import AuthFailure

Headers = Mapping[str, str]  # case-insensitive (aiohttp's CIMultiDictProxy, multidict.CIMultiDict)
_ALGORITHMS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha512": hashlib.sha512}

# Where each scheme's provider sends the delivery id its verifier returns: the default
# idempotency key (SPEC 3.3). `triggerd test` reads the same header without --verify.
DELIVERY_HEADERS: Mapping[str, str] = {
    "github": "X-GitHub-Delivery",
    "github-sha1": "X-GitHub-Delivery",
    "gitlab": "X-Gitlab-Event-UUID",
    "standard-webhooks": "webhook-id",
    "shopify": "X-Shopify-Webhook-Id",
}


@dataclass(frozen=True, slots=True)
class Verified:
    timestamp: datetime | None = None
    delivery_id: str | None = None


def _matches(candidates: list[bytes], offered: str | None) -> bool:
    """Constant-time: is `offered` one of the candidates? Every candidate is compared."""
    if offered is None:
        return False
    given = offered.strip().encode("utf-8", "replace")
    found = False
    for candidate in candidates:
        found |= hmac.compare_digest(candidate, given)
    return found


class _Keyed:
    """HMAC under one secret, its key schedule computed once.

    Each message's MAC is a copy of the keyed state: OpenSSL's one-shot hmac.digest gives up
    the GIL on every call, and on a busy daemon winning it back costs many times the hash.
    """

    def __init__(self, key: bytes, algorithm: str = "sha256") -> None:
        self._state = hmac.new(key, digestmod=_ALGORITHMS[algorithm])

    def __call__(self, message: bytes) -> bytes:
        mac = self._state.copy()
        mac.update(message)
        return mac.digest()


def _required(headers: Headers, name: str) -> str:
    value = headers.get(name)
    if value is None:
        raise AuthFailure(f"missing header {name}")
    return value


def _timestamp(text: str, now: datetime, tolerance: float) -> datetime:
    try:
        moment = datetime.fromtimestamp(int(text.strip()), UTC)
    except (ValueError, OverflowError, OSError):
        raise AuthFailure("the signature timestamp is not a Unix time") from None
    if abs((now - moment).total_seconds()) > tolerance:
        raise AuthFailure(f"the signature timestamp is outside the tolerance of {tolerance:g}s")
    return moment


class Verifier:
    """Checks one webhook's authentication against a request."""

    def __init__(self, auth: Authentication) -> None:
        self.auth = auth
        self.secrets = [s.reveal().encode() for s in auth.secrets]
        # Only generic hmac reads `algorithm`: the providers' schemes fix theirs.
        algorithm = {"hmac": auth.algorithm, "github-sha1": "sha1"}.get(auth.scheme, "sha256")
        self._macs = [_Keyed(s, algorithm) for s in self.secrets]
        self._check: Callable[[Headers, bytes, datetime], Verified] = getattr(self, "_" + auth.scheme.replace("-", "_"))

    def verify(self, headers: Headers, body: bytes, now: datetime) -> Verified:
        """What the provider vouched for; raises AuthFailure."""
        return self._check(headers, body, now)

    def _hmac(self, headers: Headers, body: bytes, now: datetime) -> Verified:
        assert self.auth.header is not None
        offered = _required(headers, self.auth.header)
        candidates = [(self.auth.prefix + self._encode(mac(body))).encode() for mac in self._macs]
        if not _matches(candidates, offered):
            raise AuthFailure(f"{self.auth.header} does not match")
        return Verified()

    def _encode(self, digest: bytes) -> str:
        return base64.b64encode(digest).decode() if self.auth.encoding == "base64" else digest.hex()

    def _github(self, headers: Headers, body: bytes, now: datetime) -> Verified:
        return self._hub(headers, body, "X-Hub-Signature-256", b"sha256=")

    def _github_sha1(self, headers: Headers, body: bytes, now: datetime) -> Verified:
        """GitHub's older header, still sent beside X-Hub-Signature-256; reached only through hmac's presets."""
        return self._hub(headers, body, "X-Hub-Signature", b"sha1=")

    def _hub(self, headers: Headers, body: bytes, header: str, prefix: bytes) -> Verified:
        offered = _required(headers, header)
        if not _matches([prefix + mac(body).hex().encode() for mac in self._macs], offered):
            raise AuthFailure(f"{header} does not match")
        return Verified(delivery_id=headers.get(DELIVERY_HEADERS["github"]))

    def _gitlab(self, headers: Headers, body: bytes, now: datetime) -> Verified:
        if not _matches(self.secrets, _required(headers, "X-Gitlab-Token")):
            raise AuthFailure("X-Gitlab-Token does not match")
        return Verified(delivery_id=headers.get(DELIVERY_HEADERS["gitlab"]))

    def _slack(self, headers: Headers, body: bytes, now: datetime) -> Verified:
        stamp = _required(headers, "X-Slack-Request-Timestamp")
        offered = _required(headers, "X-Slack-Signature")
        moment = _timestamp(stamp, now, self.auth.tolerance)
        message = b"v0:" + stamp.strip().encode() + b":" + body
        if not _matches([b"v0=" + mac(message).hex().encode() for mac in self._macs], offered):
            raise AuthFailure("X-Slack-Signature does not match")
        return Verified(timestamp=moment)

    def _stripe(self, headers: Headers, body: bytes, now: datetime) -> Verified:
        items = [part.strip().partition("=") for part in _required(headers, "Stripe-Signature").split(",")]
        stamps = [value for key, _, value in items if key == "t"]
        signatures = [value for key, _, value in items if key == "v1"]
        if len(stamps) != 1 or not signatures:
            raise AuthFailure("Stripe-Signature needs one t= and at least one v1=")
        moment = _timestamp(stamps[0], now, self.auth.tolerance)
        message = stamps[0].encode() + b"." + body
        candidates = [mac(message).hex().encode() for mac in self._macs]
        found = False
        for signature in signatures:
            found |= _matches(candidates, signature)
        if not found:
            raise AuthFailure("no v1 signature in Stripe-Signature matches")
        return Verified(timestamp=moment)

    def _standard_webhooks(self, headers: Headers, body: bytes, now: datetime) -> Verified:
        message_id = _required(headers, "webhook-id")
        stamp = _required(headers, "webhook-timestamp")
        offered = _required(headers, "webhook-signature")
        moment = _timestamp(stamp, now, self.auth.tolerance)
        message = f"{message_id}.{stamp.strip()}.".encode() + body
        candidates = [b"v1," + base64.b64encode(_Keyed(_standard_key(s))(message)) for s in self.secrets]
        found = False
        for signature in offered.split():
            found |= _matches(candidates, signature)
        if not found:
            raise AuthFailure("no signature in webhook-signature matches")
        return Verified(timestamp=moment, delivery_id=message_id)

    def _shopify(self, headers: Headers, body: bytes, now: datetime) -> Verified:
        offered = _required(headers, "X-Shopify-Hmac-Sha256")
        if not _matches([base64.b64encode(mac(body)) for mac in self._macs], offered):
            raise AuthFailure("X-Shopify-Hmac-Sha256 does not match")
        return Verified(delivery_id=headers.get(DELIVERY_HEADERS["shopify"]))

    def _bearer(self, headers: Headers, body: bytes, now: datetime) -> Verified:
        scheme, _, token = _required(headers, "Authorization").strip().partition(" ")
        if scheme.lower() != "bearer" or not _matches(self.secrets, token):
            raise AuthFailure("the bearer token does not match")
        return Verified()

    def _basic(self, headers: Headers, body: bytes, now: datetime) -> Verified:
        scheme, _, encoded = _required(headers, "Authorization").strip().partition(" ")
        try:
            username, _, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise AuthFailure("the basic credentials are not base64 user:password") from None
        user_ok = _matches([(self.auth.username or "").encode()], username)
        if scheme.lower() != "basic" or not (_matches(self.secrets, password) & user_ok):
            raise AuthFailure("the basic credentials do not match")
        return Verified()

    def _api_key(self, headers: Headers, body: bytes, now: datetime) -> Verified:
        assert self.auth.header is not None
        if not _matches(self.secrets, _required(headers, self.auth.header)):
            raise AuthFailure(f"{self.auth.header} does not match")
        return Verified()


def _standard_key(secret: bytes) -> bytes:
    """Standard Webhooks: the key is the base64 after the whsec_ prefix (a secret without it is used as base64 too)."""
    try:
        return base64.b64decode(secret.removeprefix(b"whsec_"), validate=True)
    except binascii.Error:
        raise AuthFailure("the configured standard-webhooks secret is not base64 after whsec_") from None
