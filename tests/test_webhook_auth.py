"""Webhook verifiers (SPEC 3.3): providers' published vectors, and good / bad / stale / rotated for each type."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from multidict import CIMultiDict

from triggerd.config.models import Authentication, AuthType, Secret
from triggerd.errors import AuthFailure
from triggerd.http.auth import Verified, Verifier

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
SLACK_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name="
    b"foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2F"
    b"hooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015."
    b"47445629121.803a0bc887a14d10d2c447fce8b6703c"
)


def verifier(kind: AuthType, *secrets: str, **fields: Any) -> Verifier:
    return Verifier(Authentication(type=kind, secrets=tuple(Secret(s) for s in secrets), **fields))


def check(v: Verifier, headers: dict[str, str], body: bytes, now: datetime = NOW) -> Verified:
    return v.verify(CIMultiDict(headers), body, now)


# --- the providers' published vectors --------------------------------------------------


def test_github_vector() -> None:
    v = verifier(AuthType.GITHUB, "It's a Secret to Everybody")
    signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    result = check(v, {"X-Hub-Signature-256": signature, "X-GitHub-Delivery": "d-1"}, b"Hello, World!")
    assert result.delivery_id == "d-1"


def test_a_provider_type_signs_with_its_own_algorithm_whatever_algorithm_says() -> None:
    v = verifier(AuthType.GITHUB, "It's a Secret to Everybody", algorithm="sha1")  # `algorithm` is for type hmac
    signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    check(v, {"X-Hub-Signature-256": signature}, b"Hello, World!")


def test_slack_vector_with_the_clock_at_its_timestamp() -> None:
    v = verifier(AuthType.SLACK, "8f742231b10e8888abcd99yyyzzz85a5")
    headers = {
        "X-Slack-Request-Timestamp": "1531420618",
        "X-Slack-Signature": "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
    }
    then = datetime.fromtimestamp(1531420618 + 30, UTC)
    assert check(v, headers, SLACK_BODY, then).timestamp == datetime.fromtimestamp(1531420618, UTC)
    with pytest.raises(AuthFailure, match="outside the tolerance"):
        check(v, headers, SLACK_BODY)  # the same request today is stale


def test_standard_webhooks_vector_and_a_list_of_signatures() -> None:
    v = verifier(AuthType.STANDARD_WEBHOOKS, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    good = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    headers = {"webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek", "webhook-timestamp": "1614265330"}
    then = datetime.fromtimestamp(1614265330, UTC)
    body = b'{"test": 2432232314}'
    assert check(v, {**headers, "webhook-signature": good}, body, then).delivery_id == "msg_p5jXN8AQM9LWM0D4loKWxJek"
    several = f"v1,Zm9vYmFy v2,whatever {good}"
    assert check(v, {**headers, "webhook-signature": several}, body, then).timestamp == then
    with pytest.raises(AuthFailure):
        check(v, {**headers, "webhook-signature": "v1,Zm9vYmFy"}, body, then)


# --- every type: good, bad, stale, rotated ------------------------------------------------


def mac(secret: bytes, message: bytes) -> bytes:
    return hmac.new(secret, message, hashlib.sha256).digest()


def signed(kind: AuthType, secret: str, body: bytes, at: datetime = NOW, message_id: str = "msg_1") -> dict[str, str]:
    """Headers as the provider would send them, signed with `secret` at `at`."""
    ts, key = str(int(at.timestamp())), secret.encode()
    return {
        AuthType.HMAC: lambda: {"X-Signature": "sha256=" + mac(key, body).hex()},
        AuthType.GITHUB: lambda: {"X-Hub-Signature-256": "sha256=" + mac(key, body).hex()},
        AuthType.GITLAB: lambda: {"X-Gitlab-Token": secret},
        AuthType.SLACK: lambda: {
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": "v0=" + mac(key, f"v0:{ts}:".encode() + body).hex(),
        },
        AuthType.STRIPE: lambda: {"Stripe-Signature": f"t={ts},v1={mac(key, f'{ts}.'.encode() + body).hex()},v0=x"},
        AuthType.STANDARD_WEBHOOKS: lambda: {
            "webhook-id": message_id,
            "webhook-timestamp": ts,
            "webhook-signature": "v1,"
            + base64.b64encode(
                mac(base64.b64decode(secret.removeprefix("whsec_")), f"{message_id}.{ts}.".encode() + body)
            ).decode(),
        },
        AuthType.SHOPIFY: lambda: {"X-Shopify-Hmac-Sha256": base64.b64encode(mac(key, body)).decode()},
        AuthType.BEARER: lambda: {"Authorization": f"Bearer {secret}"},
        AuthType.BASIC: lambda: {"Authorization": "Basic " + base64.b64encode(f"deploy:{secret}".encode()).decode()},
        AuthType.API_KEY: lambda: {"X-Api-Key": secret},
    }[kind]()


FIELDS: dict[AuthType, dict[str, Any]] = {
    AuthType.HMAC: {"header": "X-Signature", "prefix": "sha256="},
    AuthType.BASIC: {"username": "deploy"},
    AuthType.API_KEY: {"header": "X-Api-Key"},
}
OLD, NEW = "whsec_b2xkLXNlY3JldC0xMjM0NTY=", "whsec_bmV3LXNlY3JldC02Nzg5MA=="
TIMESTAMPED = {AuthType.SLACK, AuthType.STRIPE, AuthType.STANDARD_WEBHOOKS}


@pytest.mark.parametrize("kind", list(AuthType))
def test_good_bad_and_rotated_secrets(kind: AuthType) -> None:
    body = b'{"action": "opened"}'
    v = verifier(kind, NEW, OLD, **FIELDS.get(kind, {}))
    check(v, signed(kind, NEW, body), body)
    check(v, signed(kind, OLD, body), body)  # rotation: either secret verifies
    with pytest.raises(AuthFailure):
        check(v, signed(kind, "whsec_d3Jvbmctc2VjcmV0LTAwMDA=", body), body)
    with pytest.raises(AuthFailure, match="missing header"):
        check(v, {}, body)
    if kind not in (AuthType.GITLAB, AuthType.BEARER, AuthType.BASIC, AuthType.API_KEY):
        with pytest.raises(AuthFailure):
            check(v, signed(kind, NEW, body), body + b" ")  # the signature covers the exact bytes


@pytest.mark.parametrize("kind", sorted(TIMESTAMPED))
def test_stale_and_future_timestamps_are_refused(kind: AuthType) -> None:
    body = b"{}"
    v = verifier(kind, NEW, tolerance=300.0)
    check(v, signed(kind, NEW, body, NOW - timedelta(seconds=299)), body)
    for moment in (NOW - timedelta(seconds=301), NOW + timedelta(seconds=301)):
        with pytest.raises(AuthFailure, match="outside the tolerance"):
            check(v, signed(kind, NEW, body, moment), body)


def test_failure_reasons_never_contain_the_secret_or_the_expected_signature() -> None:
    body = b"payload"
    v = verifier(AuthType.HMAC, "top-secret", header="X-Signature")
    with pytest.raises(AuthFailure) as failure:
        check(v, {"X-Signature": "nope"}, body)
    text = str(failure.value)
    assert "top-secret" not in text
    assert mac(b"top-secret", body).hex() not in text
    assert text == "X-Signature does not match"


def test_hmac_options_sha1_base64() -> None:
    body = b"x"
    v = verifier(AuthType.HMAC, "k", header="X-Sig", algorithm="sha1", encoding="base64")
    good = base64.b64encode(hmac.new(b"k", body, hashlib.sha1).digest()).decode()
    check(v, {"X-Sig": good}, body)
    with pytest.raises(AuthFailure):
        check(v, {"X-Sig": hmac.new(b"k", body, hashlib.sha1).hexdigest()}, body)


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "sha512"])
def test_one_verifier_checks_many_requests_each_on_its_own(algorithm: str) -> None:
    """The keyed state is copied per request, so no request's bytes leak into the next one's MAC."""
    v = verifier(AuthType.HMAC, "old", "new", header="X-Sig", algorithm=algorithm)
    for n in range(5):
        body = f"request {n}".encode() * (n * 700 + 1)  # up to 2.8 kB: small and large bodies alike
        secret = (b"old", b"new")[n % 2]
        check(v, {"X-Sig": hmac.new(secret, body, getattr(hashlib, algorithm)).hexdigest()}, body)
        with pytest.raises(AuthFailure):
            check(v, {"X-Sig": hmac.new(b"other", body, getattr(hashlib, algorithm)).hexdigest()}, body)


def test_basic_needs_the_right_username_too() -> None:
    v = verifier(AuthType.BASIC, "pw", username="deploy")
    wrong_user = "Basic " + base64.b64encode(b"root:pw").decode()
    with pytest.raises(AuthFailure):
        check(v, {"Authorization": wrong_user}, b"")
    with pytest.raises(AuthFailure, match="not base64"):
        check(v, {"Authorization": "Basic %%%"}, b"")


# --- generic hmac on a provider's header: the provider's scheme (SPEC 3.3) ---------------------

PRESET_HEADERS = {  # spelled as operators write them: header names compare case-insensitively
    "X-Slack-Signature": AuthType.SLACK,
    "x-hub-signature-256": AuthType.GITHUB,
    "STRIPE-SIGNATURE": AuthType.STRIPE,
    "X-Shopify-Hmac-Sha256": AuthType.SHOPIFY,
    "Webhook-Signature": AuthType.STANDARD_WEBHOOKS,
}


@pytest.mark.parametrize(("header", "kind"), PRESET_HEADERS.items())
def test_generic_hmac_on_a_provider_header_is_verified_with_the_providers_scheme(header: str, kind: AuthType) -> None:
    body = b"token=x&text=deploy"
    # algorithm and prefix would make a plain HMAC of the body: the preset ignores them
    v = verifier(AuthType.HMAC, NEW, OLD, header=header, algorithm="sha512", prefix="sha256=", tolerance=300.0)
    assert v.auth.scheme == kind.value
    for secret in (NEW, OLD):
        check(v, signed(kind, secret, body), body)
    with pytest.raises(AuthFailure):
        check(v, {header: "sha256=" + hmac.new(NEW.encode(), body, hashlib.sha512).hexdigest()}, body)
    with pytest.raises(AuthFailure):
        check(v, signed(kind, "whsec_d3Jvbmctc2VjcmV0LTAwMDA=", body), body)
    if kind in TIMESTAMPED:
        with pytest.raises(AuthFailure, match="outside the tolerance"):
            check(v, signed(kind, NEW, body, NOW - timedelta(seconds=301)), body)


def test_generic_hmac_on_x_slack_signature_accepts_slacks_published_vector() -> None:
    v = verifier(AuthType.HMAC, "8f742231b10e8888abcd99yyyzzz85a5", header="X-Slack-Signature")
    headers = {
        "X-Slack-Request-Timestamp": "1531420618",
        "X-Slack-Signature": "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503",
    }
    check(v, headers, SLACK_BODY, datetime.fromtimestamp(1531420618 + 30, UTC))
    with pytest.raises(AuthFailure, match="outside the tolerance"):
        check(v, headers, SLACK_BODY)


def test_generic_hmac_on_x_hub_signature_is_githubs_sha1_form() -> None:
    v = verifier(AuthType.HMAC, "It's a Secret to Everybody", header="X-Hub-Signature")
    body = b"Hello, World!"
    good = "sha1=" + hmac.new(b"It's a Secret to Everybody", body, hashlib.sha1).hexdigest()
    assert check(v, {"X-Hub-Signature": good, "X-GitHub-Delivery": "d-9"}, body).delivery_id == "d-9"
    with pytest.raises(AuthFailure, match="X-Hub-Signature does not match"):
        check(v, {"X-Hub-Signature": good.removeprefix("sha1=")}, body)


def test_generic_hmac_on_any_other_header_stays_a_plain_hmac_of_the_body() -> None:
    v = verifier(AuthType.HMAC, "k", header="X-Signature-256")
    assert v.auth.scheme == "hmac"
    check(v, {"X-Signature-256": hmac.new(b"k", b"b", hashlib.sha256).hexdigest()}, b"b")
