"""What one look at a migration works with: the API, the migration, its instance, the new status."""

from __future__ import annotations

from dataclasses import dataclass, field

from coai_operator.kube import Kube
from coai_operator.migration.model import Obj


@dataclass
class Ctx:
    kube: Kube
    migration: Obj
    instance: Obj | None
    status: Obj
    events: list[tuple[str, str, str]] = field(default_factory=list)
    wake: bool = True  # run the instance controller after a status.upgrade write (tests: their stand-in does)

    @property
    def name(self) -> str:
        return self.migration["metadata"]["name"]

    @property
    def namespace(self) -> str:
        return self.migration["metadata"]["namespace"]

    @property
    def spec(self) -> Obj:
        return self.migration["spec"]

    @property
    def instance_name(self) -> str:
        return self.spec["instanceRef"]["name"]

    @property
    def deleting(self) -> bool:
        return bool(self.migration["metadata"].get("deletionTimestamp"))

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.events.append(("Warning" if warning else "Normal", str(reason), message))
