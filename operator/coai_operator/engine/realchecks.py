"""Validation checks against the real CoAI API (login, authenticated read, version fingerprint).

Each takes validate.Settings, returns a one-line success message, raises validate.Skip when it
lacks what it needs and validate.Fail naming what failed. One login serves all three.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from coai_operator.bundles.realline import has_userinfo, is_real
from coai_operator.engine.coaiapi import ROOT_USER, ApiError, CoaiClient

if TYPE_CHECKING:
    from coai_operator.engine.validate import Settings


def _errors() -> tuple[type[Exception], type[Exception]]:
    from coai_operator.engine.validate import Fail, Skip

    return Skip, Fail


def client(settings: Settings) -> CoaiClient:
    skip, _ = _errors()
    if not settings.base_url:
        raise skip("not configured: no --base-url")
    return CoaiClient(settings.base_url, settings.api_prefix, timeout=settings.timeout,
                      retry_interval=settings.retry_interval)


def token(settings: Settings) -> str:
    """root's session token, logging in once per validation run."""
    skip, fail = _errors()
    if settings._token:
        return settings._token
    password = os.environ.get(settings.admin_password_env, "")
    if not password:
        raise skip(f"skipped: no {settings.admin_password_env} (the instance's spec.admin.passwordSecretRef)")
    api = client(settings)
    try:
        settings._token = api.login(ROOT_USER, password)
    except ApiError as exc:
        raise fail(f"login as {ROOT_USER} failed: {exc}") from exc
    return settings._token


def check_login(settings: Settings) -> str:
    token(settings)
    return f"POST {client(settings).url('/login')}: {ROOT_USER} logged in (status true)"


def check_quota(settings: Settings) -> str:
    _, fail = _errors()
    api = client(settings)
    try:
        quota = api.quota(token(settings))
    except ApiError as exc:
        raise fail(f"authenticated read failed: {exc}") from exc
    return f"GET {api.url('/quota')}: status true, quota {quota:g}"


def check_fingerprint(settings: Settings) -> str:
    skip, fail = _errors()
    expected = settings.expect_version
    if not expected or not is_real(expected):
        raise skip("skipped: no --expect-version of the real 3.x/4.x line")
    api = client(settings)
    try:
        status = api.userinfo_status(token(settings))
    except ApiError as exc:
        raise fail(f"fingerprint request failed: {exc}") from exc
    answers = status != 404
    if answers != has_userinfo(expected):
        seen = "4.x" if answers else "3.x"
        raise fail(f"the app is not {expected}: GET {api.url('/userinfo')} is HTTP {status}, which is {seen} "
                   "(the image does not match its tag)")
    return f"GET {api.url('/userinfo')}: HTTP {status}, as {expected} answers"
