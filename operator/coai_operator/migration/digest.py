"""The image digest the app runs: recorded before an upgrade, deployed again by a rollback.

Tags move (re-pushed, `latest`), so a rollback to `image:version` could start something else than
what ran. The kubelet reports what a container really runs in status.containerStatuses[].imageID;
when that holds a repository digest (`name@sha256:...`) the rollback pins status.upgrade.imageDigest to it
(the instance renders image@digest).
A bare image ID (`sha256:...` of the config, no repository digest) cannot be pulled by digest:
then nothing is pinned and the rollback uses the tag.
"""

from __future__ import annotations

import re
from typing import Any

from coai_operator import constants
from coai_operator.instance.render import APP_COMPONENT, APP_CONTAINER

_REPO_DIGEST = re.compile(r"@(sha256:[a-f0-9]{64})$")


def repo_digest(image_id: str | None) -> str | None:
    match = _REPO_DIGEST.search(image_id or "")
    return match.group(1) if match else None


def running_digest(kube: Any, namespace: str, instance: str) -> str | None:
    """The repository digest of the CoAI container of a running pod of `instance` (None: unknown)."""
    selector = ",".join(f"{k}={v}" for k, v in constants.selector_labels(instance, APP_COMPONENT).items())
    for pod in kube.list("v1", "Pod", namespace, label_selector=selector):
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            if cs.get("name") == APP_CONTAINER and cs.get("ready"):
                found = repo_digest(cs.get("imageID"))
                if found:
                    return found
    return None
