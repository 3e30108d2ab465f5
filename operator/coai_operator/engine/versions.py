"""Moved to coai_operator.domain.versions (shared with the bundles); kept so old imports work."""

from coai_operator.domain.versions import *  # noqa: F403
