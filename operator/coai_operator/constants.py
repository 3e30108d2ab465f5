"""Names shared by the CRDs, the controllers and the Jobs: one place, so they never drift."""

from __future__ import annotations

import os

GROUP = "coai.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

INSTANCE_KIND = "CoaiInstance"
INSTANCE_PLURAL = "coaiinstances"
MIGRATION_KIND = "CoaiMigration"
MIGRATION_PLURAL = "coaimigrations"

MANAGED_BY = "coai-operator"
APP_NAME = "coai"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_VERSION = "app.kubernetes.io/version"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"

# The operator's own image. Pods that run it are the engine's Jobs; the e2e node agent runs
# them as local processes of this checkout.
OPERATOR_IMAGE = "ghcr.io/coai-operator/coai-operator:0.1.0"

DEFAULT_APP_IMAGE = "programzmh/chatnio"
# Where the operator image keeps the tiktoken BPE files (Dockerfile), for the app's offline mode.
TIKTOKEN_IMAGE_DIR = "/opt/coai-operator/tiktoken"


def engine_image() -> str:
    """The operator's image as its pods should run it (COAI_ENGINE_IMAGE overrides, e.g. a mirror)."""
    return os.environ.get("COAI_ENGINE_IMAGE") or OPERATOR_IMAGE


def labels(instance: str, component: str, version: str | None = None) -> dict[str, str]:
    """The app.kubernetes.io/* labels every child object carries."""
    result = {
        LABEL_NAME: APP_NAME,
        LABEL_INSTANCE: instance,
        LABEL_COMPONENT: component,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_PART_OF: APP_NAME,
    }
    if version:
        result[LABEL_VERSION] = version
    return result


def selector_labels(instance: str, component: str) -> dict[str, str]:
    """The stable subset used in selectors (never includes the version)."""
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: instance, LABEL_COMPONENT: component}
