"""A small client of the real CoAI HTTP API (login, admin, relay), shared by validation, the
admin-password step and the tests. Passwords, tokens and keys never reach a log line or a message.

The app answers HTTP 200 with `{"status": false, "error": ...}` for most failures; `ApiError`
carries the path and the app's error text.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

ROOT_USER = "root"
DEFAULT_ROOT_PASSWORD = "chatnio123456"  # noqa: S105  (the app's public default, which we replace)
PASSWORD_LENGTH = (6, 36)  # what the app accepts
RETRYABLE = (502, 503, 504)


class ApiError(Exception):
    """A request failed; the message names the request and what the app said (never a secret)."""


@dataclass
class Response:
    status: int
    body: Any  # parsed JSON, or the raw text when it was not JSON


@dataclass
class CoaiClient:
    base_url: str
    api_prefix: str = ""  # "/api" when the app serves its frontend (SERVE_STATIC on)
    timeout: float = 10.0
    retry_interval: float = 2.0

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + self.api_prefix + "/" + path.lstrip("/")

    def request(self, method: str, path: str, *, payload: Any = None, auth: str | None = None) -> Response:
        """One call; connection errors and 502/503/504 are retried until `timeout` has passed."""
        url = self.url(path)
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise ApiError(f"unsupported URL scheme in {url}")
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        if auth:
            headers["Authorization"] = auth
        data = json.dumps(payload).encode() if payload is not None else None
        deadline = time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
            try:
                with urllib.request.urlopen(request, timeout=max(0.5, min(remaining, 60.0))) as answer:  # noqa: S310
                    return Response(answer.status, _parse(answer.read(1 << 20)))
            except urllib.error.HTTPError as exc:
                if exc.code not in RETRYABLE or remaining <= self.retry_interval:
                    return Response(exc.code, _parse(exc.read(1 << 16)))
            except (urllib.error.URLError, TimeoutError, OSError) as exc:
                if remaining <= self.retry_interval:
                    raise ApiError(f"{method} {url}: {getattr(exc, 'reason', exc)}") from exc
            time.sleep(self.retry_interval)

    def ok(self, method: str, path: str, *, payload: Any = None, auth: str | None = None) -> dict[str, Any]:
        """A call that must answer HTTP 200 with status true."""
        answer = self.request(method, path, payload=payload, auth=auth)
        body = answer.body if isinstance(answer.body, dict) else {}
        if answer.status != 200 or body.get("status") is not True:
            said = body.get("error") or body.get("message") or (answer.body if isinstance(answer.body, str) else "")
            raise ApiError(f"{method} {self.url(path)}: HTTP {answer.status}, status "
                           f"{body.get('status')!r}{': ' + str(said)[:200] if said else ''}")
        return body

    # --- the calls ------------------------------------------------------------------------------

    def login(self, username: str, password: str) -> str:
        """A session token (send it as `Authorization: <token>`)."""
        body = self.ok("POST", "/login", payload={"username": username, "password": password})
        token = body.get("token")
        if not isinstance(token, str) or not token:
            raise ApiError(f"POST {self.url('/login')}: status true but no token")
        return token

    def try_login(self, username: str, password: str) -> str | None:
        """A token, or None when the app refuses these credentials (other failures raise)."""
        answer = self.request("POST", "/login", payload={"username": username, "password": password})
        body = answer.body if isinstance(answer.body, dict) else {}
        if answer.status == 200 and body.get("status") is True and body.get("token"):
            return str(body["token"])
        if answer.status == 200 and body.get("status") is False and "dial tcp" not in str(body.get("error")):
            return None
        raise ApiError(f"POST {self.url('/login')}: HTTP {answer.status}: {str(body.get('error') or '')[:200]}")

    def set_root_password(self, token: str, password: str) -> None:
        self.ok("POST", "/admin/user/root", payload={"password": password}, auth=token)

    def quota(self, token: str) -> float:
        return float(self.ok("GET", "/quota", auth=token).get("quota") or 0)

    def userinfo_status(self, token: str) -> int:
        """HTTP status of GET /userinfo: 404 on 3.x (no such route), 200 on 4.x."""
        return self.request("GET", "/userinfo", auth=token).status

    def api_key(self, token: str) -> str:
        key = self.ok("GET", "/apikey", auth=token).get("key")
        if not isinstance(key, str) or not key.startswith("sk-"):
            raise ApiError(f"GET {self.url('/apikey')}: no sk- key in the answer")
        return key

    def create_channel(self, token: str, *, name: str, endpoint: str, models: list[str], secret: str,
                       channel_type: str = "openai") -> None:
        self.ok("POST", "/admin/channel/create", auth=token, payload={
            "name": name, "type": channel_type, "priority": 0, "weight": 1, "retry": 1, "secret": secret,
            "models": models, "mapper": "", "state": True, "group": [], "endpoint": endpoint, "proxy": {},
        })

    def channels(self, token: str) -> list[dict[str, Any]]:
        data = self.ok("GET", "/admin/channel/list", auth=token).get("data")
        return data if isinstance(data, list) else []

    def chat(self, api_key: str, model: str, content: str = "Hello") -> str:
        """The answer text of one (non-streamed) chat completion through the relay."""
        payload = {"model": model, "messages": [{"role": "user", "content": content}], "stream": False}
        answer = self.request("POST", "/v1/chat/completions", payload=payload, auth=f"Bearer {api_key}")
        body = answer.body if isinstance(answer.body, dict) else {}
        try:
            text = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            said = body.get("error") or (answer.body if isinstance(answer.body, str) else "")
            raise ApiError(f"POST {self.url('/v1/chat/completions')}: HTTP {answer.status}, no "
                           f"choices[0].message.content{': ' + str(said)[:200] if said else ''}") from None
        if not isinstance(text, str):
            raise ApiError(f"POST {self.url('/v1/chat/completions')}: the answer's content is not text")
        return text


def _parse(raw: bytes) -> Any:
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text.strip()[:300]


def check_password(password: str) -> None:
    low, high = PASSWORD_LENGTH
    if not low <= len(password.strip()) <= high:
        raise ApiError(f"the admin password must be {low} to {high} characters (CoAI's rule); it has "
                       f"{len(password.strip())}")


def ensure_root_password(client: CoaiClient, password: str) -> str:
    """Make root's password `password`: 'unchanged' when it already is, 'set' when the app still had
    its public default. Raises when root accepts neither (someone changed it by hand)."""
    check_password(password)
    if client.try_login(ROOT_USER, password):
        return "unchanged"
    token = client.try_login(ROOT_USER, DEFAULT_ROOT_PASSWORD)
    if token is None:
        raise ApiError("root accepts neither the Secret's password nor the default one: it was changed by "
                       "hand; put the current password in the Secret, or reset it with `chat root` in the pod")
    client.set_root_password(token, password)
    if not client.try_login(ROOT_USER, password):
        raise ApiError("root's password was set through /admin/user/root but a login with it fails")
    return "set"
