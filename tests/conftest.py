"""Fixtures for unit and integration tests."""

from tests.mariadb import db_config, db_env, mariadb_host, mariadb_proc, mariadb_server  # noqa: F401  (fixtures)
from tests.realapp import redis_server, stand_in_upstream  # noqa: F401  (fixtures)
from tests.s3 import s3_bucket, s3_server  # noqa: F401  (fixtures)
