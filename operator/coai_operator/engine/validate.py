"""`engine validate`: is the upgraded app working and is the data all there?

Checks (each reports {name, status: passed|failed|skipped, message, durationMs}):
- database:      connect with the MYSQL_* settings and run SELECT 1.
- health:        GET {base-url}{health-path} answers 2xx. The real CoAI has no /health (its
                 `GET /api/` answers when static serving is on): set --health-path accordingly.
- chat:          POST {base-url}/v1/chat/completions with `Authorization: Bearer $TEST_API_KEY`
                 returns choices[0].message.content. Skipped when the key is not set.
- files:         POST {base-url}/v1/files (multipart: file, purpose=chat) returns an id. The real
                 CoAI has no /v1/files; switch it off there (--skip files).
- login:         (real app) POST {base-url}{api-prefix}/login as root with $COAI_ADMIN_PASSWORD
                 answers status true.
- quota:         (real app) an authenticated read, GET {api-prefix}/quota with that login's token.
- fingerprint:   (real app) GET {api-prefix}/userinfo is 404 on 3.x and answers on 4.x: catches an
                 image that is not the --expect-version its tag says.
- dataIntegrity: row counts against a backup manifest (or --row-counts-env). Rule: no table may LOSE rows — every
                 table in the manifest's rowCounts that still exists must have at least as many
                 rows now (exactly as many with --exact, e.g. straight after a restore); a table
                 that no longer exists fails unless listed in --allow-dropped; tables created by
                 a migration are fine; --ignore-tables exempts tables that shrink by design.
HTTP checks retry connection errors and 502/503/504 every --retry-interval seconds until --timeout
(the app may still be settling right after a rollout); any other answer is final.
A check without what it needs (no --base-url, no key, no --manifest, no MYSQL_HOST) is skipped
with the reason; `--skip` switches any of them off. Exit 1 when any check failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql

from coai_operator.domain.errors import ValidationError
from coai_operator.engine import realchecks
from coai_operator.engine.dbconfig import ConfigError, DbConfig, connect
from coai_operator.engine.dbtools import describe_db_error
from coai_operator.engine.manifest import ManifestError, read_manifest
from coai_operator.engine.rowcounts import count_rows, list_tables, schema_version

log = logging.getLogger(__name__)

CHECKS = ("database", "health", "login", "quota", "fingerprint", "chat", "files", "dataIntegrity")
# The real app's checks run only when named (--checks): the guide's line has no root user.
REAL_APP_CHECKS = ("login", "quota", "fingerprint")
DEFAULT_CHECKS = tuple(c for c in CHECKS if c not in REAL_APP_CHECKS)
PASSED, FAILED, SKIPPED = "passed", "failed", "skipped"


def _csv(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checks", help=f"comma list of {','.join(CHECKS)} (default: {','.join(DEFAULT_CHECKS)})")
    parser.add_argument("--skip", help="comma list of checks to switch off")
    parser.add_argument("--base-url", help="the app's base URL, e.g. http://coai.ns.svc:80")
    parser.add_argument("--health-path", default="/health", help="health endpoint path (default /health)")
    parser.add_argument("--chat-path", default="/v1/chat/completions")
    parser.add_argument("--files-path", default="/v1/files")
    parser.add_argument("--chat-model", default="gpt-3.5-turbo")
    parser.add_argument("--api-key-env", default="TEST_API_KEY", help="env var holding the API key")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds each HTTP check may take, retrying connection errors and 502/503/504 "
                             "(default 10); also the DB connect timeout")
    parser.add_argument("--retry-interval", type=float, default=2.0, help="seconds between HTTP retries")
    parser.add_argument("--manifest", type=Path, help="backup manifest (file or directory) for dataIntegrity")
    parser.add_argument("--row-counts-env", help="for dataIntegrity without a manifest: the environment variable "
                                                 "holding the backup's row counts as JSON {table: rows}")
    parser.add_argument("--exact", action="store_true", help="dataIntegrity: counts must be equal, not just >=")
    parser.add_argument("--ignore-tables", help="dataIntegrity: tables allowed to lose rows")
    parser.add_argument("--allow-dropped", help="dataIntegrity: tables a migration may drop")
    parser.add_argument("--api-prefix", default="", help="real app: /api when it serves its frontend (SERVE_STATIC)")
    parser.add_argument("--expect-version", help="real app: the version the fingerprint check expects")
    parser.add_argument("--admin-password-env", default="COAI_ADMIN_PASSWORD",
                        help="env var holding root's password (login, quota, fingerprint)")


@dataclass
class CheckResult:
    name: str
    status: str
    message: str
    durationMs: int = 0  # noqa: N815 - the report's field name

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "message": self.message, "durationMs": self.durationMs}


class Skip(Exception):  # noqa: N818 - control flow, not an error
    """Raised by a check that lacks what it needs."""


class Fail(Exception):  # noqa: N818
    """Raised by a check that ran and found a problem."""


@dataclass
class Settings:
    base_url: str | None
    health_path: str = "/health"
    chat_path: str = "/v1/chat/completions"
    files_path: str = "/v1/files"
    chat_model: str = "gpt-3.5-turbo"
    api_key_env: str = "TEST_API_KEY"
    timeout: float = 10.0
    retry_interval: float = 2.0
    manifest: Path | None = None
    row_counts_env: str | None = None
    exact: bool = False
    ignore_tables: tuple[str, ...] = ()
    allow_dropped: tuple[str, ...] = ()
    api_prefix: str = ""
    expect_version: str | None = None
    admin_password_env: str = "COAI_ADMIN_PASSWORD"  # noqa: S105  (a variable name)
    _token: str | None = None

    def url(self, path: str) -> str:
        if not self.base_url:
            raise Skip("not configured: no --base-url")
        return self.base_url.rstrip("/") + "/" + path.lstrip("/")

    def api_key(self) -> str:
        key = os.environ.get(self.api_key_env, "")
        if not key:
            raise Skip(f"skipped: no {self.api_key_env}")
        return key


RETRYABLE_STATUS = (502, 503, 504)


def _http_once(request: urllib.request.Request, timeout: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - scheme checked
            return response.status, response.read(1 << 20)
    except urllib.error.HTTPError as exc:
        body = exc.read(300).decode("utf-8", errors="replace").strip().replace("\n", " ")
        raise _HttpFailure(f"{request.method} {request.full_url}: HTTP {exc.code}{': ' + body[:200] if body else ''}",
                           retryable=exc.code in RETRYABLE_STATUS) from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise _HttpFailure(f"{request.method} {request.full_url}: {reason}", retryable=True) from exc


class _HttpFailure(Fail):
    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def _http(settings: Settings, url: str, *, data: bytes | None = None, headers: dict[str, str] | None = None,
          method: str = "GET") -> tuple[int, bytes]:
    """One request, retried on connection errors and 502/503/504 until --timeout has passed
    (the app may still be settling right after a rollout); other answers are final."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise Fail(f"unsupported URL scheme in {url}")
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)  # noqa: S310
    deadline = time.monotonic() + settings.timeout
    while True:
        remaining = deadline - time.monotonic()
        try:
            return _http_once(request, max(0.5, min(remaining, 30.0)))
        except _HttpFailure as exc:
            if not exc.retryable or remaining <= settings.retry_interval:
                raise
            log.info("%s; retrying in %.0fs", exc, settings.retry_interval)
            time.sleep(settings.retry_interval)


def _json(body: bytes, what: str) -> Any:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Fail(f"{what} did not answer JSON: {body[:120]!r}") from exc


def _db_config(settings: Settings) -> DbConfig:
    return dataclasses.replace(DbConfig.from_env(), connect_timeout=max(1, int(settings.timeout)))


def check_database(settings: Settings) -> str:
    try:
        cfg = _db_config(settings)
    except ConfigError as exc:
        raise Skip(f"not configured: {exc}") from exc
    try:
        conn = connect(cfg)
    except pymysql.err.MySQLError as exc:
        raise Fail(describe_db_error(cfg, exc)) from exc
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.execute("SELECT VERSION()")
            server = cur.fetchone()[0]
        version = schema_version(conn, cfg.database)
    finally:
        conn.close()
    return f"{cfg.describe()} reachable (MariaDB {server}, schema version {version or 'untracked'})"


def check_health(settings: Settings) -> str:
    url = settings.url(settings.health_path)
    status, _ = _http(settings, url)
    return f"GET {url}: HTTP {status}"


def check_chat(settings: Settings) -> str:
    url, key = settings.url(settings.chat_path), settings.api_key()
    payload = {"model": settings.chat_model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 10}
    status, body = _http(settings, url, data=json.dumps(payload).encode(), method="POST",
                         headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    answer = _json(body, url)
    try:
        content = answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise Fail(f"POST {url}: HTTP {status} but no choices[0].message.content") from exc
    if not isinstance(content, str):
        raise Fail(f"POST {url}: choices[0].message.content is not text")
    return f"POST {url}: HTTP {status}, model answered {len(content)} characters"


def _multipart(fields: dict[str, str], file_field: str, filename: str, content: bytes) -> tuple[bytes, str]:
    boundary = f"coai-{uuid.uuid4().hex}"
    parts: list[bytes] = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; filename="{filename}"\r\n'
        "Content-Type: text/plain\r\n\r\n".encode() + content + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def check_files(settings: Settings) -> str:
    url, key = settings.url(settings.files_path), settings.api_key()
    body, content_type = _multipart({"purpose": "chat"}, "file", "coai-validation.txt", b"This is a test file\n")
    status, answer_body = _http(settings, url, data=body, method="POST",
                                headers={"Authorization": f"Bearer {key}", "Content-Type": content_type})
    answer = _json(answer_body, url)
    if not isinstance(answer, dict) or not answer.get("id"):
        raise Fail(f"POST {url}: HTTP {status} but the answer has no id")
    return f"POST {url}: HTTP {status}, file id {answer['id']}"


def _expected_rows(settings: Settings) -> dict[str, int]:
    if settings.manifest is not None:
        counts = read_manifest(settings.manifest).row_counts
        if not counts:
            raise Fail(f"{settings.manifest} records no row counts")
        return counts
    assert settings.row_counts_env is not None
    try:
        counts = json.loads(os.environ.get(settings.row_counts_env) or "{}")
    except json.JSONDecodeError as exc:
        raise Fail(f"${settings.row_counts_env} is not JSON: {exc}") from exc
    if not isinstance(counts, dict) or not counts:
        raise Fail(f"${settings.row_counts_env} holds no row counts (the backup recorded none)")
    return {str(t): int(n) for t, n in counts.items()}


def check_data_integrity(settings: Settings) -> str:
    if settings.manifest is None and not settings.row_counts_env:
        raise Skip("not configured: no --manifest or --row-counts-env")
    try:
        row_counts = _expected_rows(settings)
        cfg = _db_config(settings)
    except (ManifestError, ConfigError) as exc:
        raise Fail(str(exc)) from exc
    try:
        conn = connect(cfg)
    except pymysql.err.MySQLError as exc:
        raise Fail(describe_db_error(cfg, exc)) from exc
    try:
        present = set(list_tables(conn, cfg.database))
        expected = {t: n for t, n in row_counts.items() if t not in settings.ignore_tables}
        now = count_rows(conn, sorted(t for t in expected if t in present))
    finally:
        conn.close()
    problems = [f"{t} was dropped" for t in sorted(expected) if t not in present and t not in settings.allow_dropped]
    for table, before in sorted(expected.items()):
        if table not in now:
            continue
        if now[table] < before or (settings.exact and now[table] != before):
            problems.append(f"{table} has {now[table]} rows, backup had {before}")
    if problems:
        raise Fail("; ".join(problems[:10]))
    rule = "equal to" if settings.exact else "at least"
    return f"{len(now)} tables have {rule} the backup's row counts"


RUNNERS: dict[str, Callable[[Settings], str]] = {
    "database": check_database,
    "health": check_health,
    "login": realchecks.check_login,
    "quota": realchecks.check_quota,
    "fingerprint": realchecks.check_fingerprint,
    "chat": check_chat,
    "files": check_files,
    "dataIntegrity": check_data_integrity,
}


def run_check(name: str, settings: Settings) -> CheckResult:
    started = time.monotonic()
    try:
        message, status = RUNNERS[name](settings), PASSED
    except Skip as exc:
        message, status = str(exc), SKIPPED
    except Fail as exc:
        message, status = str(exc), FAILED
    elapsed = int((time.monotonic() - started) * 1000)
    log.info("%s: %s — %s", name, status, message)
    return CheckResult(name, status, message.splitlines()[0] if message else "", elapsed)


def validate(selected: list[str], skipped: list[str], settings: Settings) -> dict[str, Any]:
    results = []
    for name in CHECKS:
        if name in REAL_APP_CHECKS and name not in selected:
            continue
        if name not in selected:
            results.append(CheckResult(name, SKIPPED, "not selected"))
        elif name in skipped:
            results.append(CheckResult(name, SKIPPED, "switched off"))
        else:
            results.append(run_check(name, settings))
    summary = {s: sum(1 for r in results if r.status == s) for s in (PASSED, FAILED, SKIPPED)}
    return {"checks": [r.to_dict() for r in results], **summary}


def run(args: argparse.Namespace) -> dict[str, Any]:
    selected, skipped = _csv(args.checks) or list(DEFAULT_CHECKS), _csv(args.skip)
    unknown = [c for c in selected + skipped if c not in CHECKS]
    if unknown:
        raise ValidationError(f"unknown check(s) {', '.join(unknown)}; known: {', '.join(CHECKS)}")
    settings = Settings(
        base_url=args.base_url, health_path=args.health_path, chat_path=args.chat_path, files_path=args.files_path,
        chat_model=args.chat_model, api_key_env=args.api_key_env, timeout=args.timeout,
        retry_interval=args.retry_interval, manifest=args.manifest, row_counts_env=args.row_counts_env,
        exact=args.exact, ignore_tables=tuple(_csv(args.ignore_tables)), allow_dropped=tuple(_csv(args.allow_dropped)),
        api_prefix=args.api_prefix, expect_version=args.expect_version, admin_password_env=args.admin_password_env,
    )
    report = validate(selected, skipped, settings)
    if report[FAILED]:
        log.error("validation report: %s", json.dumps(report, sort_keys=True))
        failed = [f"{c['name']} ({c['message']})" for c in report["checks"] if c["status"] == FAILED]
        error = ValidationError(f"{report[FAILED]} check(s) failed: {'; '.join(failed)}"[:1000])
        error.details = report  # type: ignore[attr-defined]
        raise error
    return report
