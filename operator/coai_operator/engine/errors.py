"""Moved to coai_operator.domain.errors (shared with the bundles); kept so old imports work."""

from coai_operator.domain.errors import *  # noqa: F403
