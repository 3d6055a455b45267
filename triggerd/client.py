"""A small client of the admin API for the CLI commands that talk to the running daemon."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from triggerd.config.models import Settings
from triggerd.errors import TriggerdError


class ClientError(TriggerdError):
    """Raised by AdminClient when the daemon cannot be reached or answers with an error."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class AdminClient:
    url: str
    token: str | None = None
    timeout: float = 30.0

    @classmethod
    def locate(cls, settings: Settings | None, url: str | None, token: str | None) -> AdminClient:
        """--url/--token, then TRIGGERD_URL/TRIGGERD_TOKEN, then the settings' admin address and first token."""
        url = url or os.environ.get("TRIGGERD_URL")
        token = token or os.environ.get("TRIGGERD_TOKEN")
        if settings is not None:
            listen = settings.admin.listen or settings.server.listen
            host = (
                "127.0.0.1"
                if listen.host in ("0.0.0.0", "")  # noqa: S104 - a wildcard listener is reached on loopback
                else "::1"
                if listen.host == "::"
                else listen.host
            )
            url = url or f"http://{f'[{host}]' if ':' in host else host}:{listen.port}"
            if token is None and settings.admin.tokens:
                token = settings.admin.tokens[0].reveal()
        return cls((url or "http://127.0.0.1:8080").rstrip("/"), token)

    def request(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None) -> Any:
        params = {k: v for k, v in (query or {}).items() if v is not None}
        target = self.url + path + (f"?{urlencode(params)}" if params else "")
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(target, data=data, method=method, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                message = json.loads(raw).get("error", raw.decode())
            except (ValueError, AttributeError):
                message = raw.decode("utf-8", "replace") or exc.reason
            raise ClientError(f"{exc.code}: {message}", exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClientError(f"cannot reach triggerd at {self.url}: {reason}") from None

    @staticmethod
    def quoted(value: str) -> str:
        return quote(value, safe="")
