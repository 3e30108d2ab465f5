"""`engine admin-password`: give the real app's root user the password from a Secret.

The app creates root with a public default password on an empty database. This logs in with the
default once and sets the new password through the admin API (never `chat root <password>`,
which would put it on a command line). Idempotent: when the password already works nothing is
sent. The password comes from $COAI_ADMIN_PASSWORD (a secretKeyRef), never from argv.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from coai_operator.domain.errors import EngineError
from coai_operator.engine.coaiapi import ApiError, CoaiClient, ensure_root_password

PASSWORD_ENV = "COAI_ADMIN_PASSWORD"  # noqa: S105  (the variable's name)


class AdminPasswordError(EngineError):
    reason = "AdminPasswordFailed"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base-url", required=True, help="the app's base URL, e.g. http://coai.ns.svc:80")
    parser.add_argument("--api-prefix", default="", help="/api when the app serves its frontend (SERVE_STATIC)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for the app to answer (default 120)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    password = os.environ.get(PASSWORD_ENV, "")
    if not password:
        raise AdminPasswordError(f"${PASSWORD_ENV} is empty: mount the admin password Secret's key")
    client = CoaiClient(args.base_url, args.api_prefix, timeout=args.timeout)
    try:
        outcome = ensure_root_password(client, password)
    except ApiError as exc:
        raise AdminPasswordError(str(exc)) from exc
    return {"adminPassword": outcome}
