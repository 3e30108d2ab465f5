"""A CoaiInstance that really becomes Ready on the local node: the guide-line stand-in app image
(e2e/standin) against a database of the test MariaDB, which pods reach at the address the
fixtures publish. For scenarios about the operator, not about a particular app version."""

from __future__ import annotations

from typing import Any

import yaml

from coai_operator.engine.dbconfig import DbConfig
from e2e.localcluster.appimages import STANDIN_IMAGE

# The stand-in is a small Python server. The app's production default (100m CPU, 1 GiB requested)
# would let only a handful of instances fit on the 2-core test node (the fault matrix runs 29).
STANDIN_RESOURCES = {"requests": {"cpu": "10m", "memory": "48Mi"}, "limits": {"memory": "256Mi"}}


def standin_instance(db: DbConfig, name: str = "coai", version: str = "2.0.0", **spec: Any) -> str:
    """The manifests (password Secret + CoaiInstance) as one YAML stream for `kubectl apply -f -`."""
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"{name}-db"},
              "stringData": {"password": db.password}}
    instance = {
        "apiVersion": "coai.dev/v1alpha1", "kind": "CoaiInstance", "metadata": {"name": name},
        "spec": {"version": version, "image": STANDIN_IMAGE, "resources": STANDIN_RESOURCES,
                 "database": {"host": db.host, "port": db.port, "name": db.database, "user": db.user,
                              "passwordSecretRef": {"name": f"{name}-db"}},
                 **spec},
    }
    return yaml.safe_dump_all([secret, instance])
