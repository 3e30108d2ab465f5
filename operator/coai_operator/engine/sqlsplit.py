"""Moved to coai_operator.domain.sqlsplit (shared with the bundles); kept so old imports work."""

from coai_operator.domain.sqlsplit import *  # noqa: F403
