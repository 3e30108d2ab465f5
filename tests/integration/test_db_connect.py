"""The engine's connection retries an unreachable server for a while, and only that."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import threading
from collections.abc import Iterator

import pymysql
import pytest

from coai_operator.engine.dbconfig import DbConfig, connect

pytestmark = pytest.mark.integration


def _relay(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):  # the other direction closed both sockets
        while data := source.recv(65536):
            sink.sendall(data)
    for sock in (source, sink):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class LateForwarder:
    """A loopback port that refuses connections until `open()`, then forwards them to MariaDB."""

    def __init__(self, target: DbConfig) -> None:
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()  # nothing listens: a connection is refused, as from a pod whose network is not up
        self.listener: socket.socket | None = None

    def open(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        assert self.listener is not None
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection((self.target.host, self.target.port))
            threading.Thread(target=_relay, args=(client, server), daemon=True).start()
            threading.Thread(target=_relay, args=(server, client), daemon=True).start()

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()


@pytest.fixture
def late(db_config: DbConfig) -> Iterator[LateForwarder]:
    forwarder = LateForwarder(db_config)
    yield forwarder
    forwarder.close()


def test_a_server_that_comes_up_late_is_reached(db_config: DbConfig, late: LateForwarder,
                                                caplog: pytest.LogCaptureFixture) -> None:
    cfg = dataclasses.replace(db_config, host="127.0.0.1", port=late.port, connect_retry_seconds=20)
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            late.open()  # the network comes up after two refused attempts

    with caplog.at_level(logging.WARNING, logger="coai_operator.engine.dbconfig"):
        conn = connect(cfg, sleep=sleep)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT DATABASE()")
            assert cur.fetchone()[0] == db_config.database
    finally:
        conn.close()
    assert waits == [0.5, 1.0]
    assert "cannot reach the database" in caplog.text and db_config.password not in caplog.text


def test_an_unreachable_server_fails_once_its_retry_window_is_spent(db_config: DbConfig,
                                                                    late: LateForwarder) -> None:
    cfg = dataclasses.replace(db_config, host="127.0.0.1", port=late.port, connect_retry_seconds=4)
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    with pytest.raises(pymysql.err.OperationalError) as failed:
        connect(cfg, sleep=sleep, clock=lambda: now[0])
    assert failed.value.args[0] == 2003
    assert waits == [0.5, 1.0, 2.0] and sum(waits) <= cfg.connect_retry_seconds


def test_a_wrong_password_is_an_answer_and_is_not_retried(db_config: DbConfig) -> None:
    cfg = dataclasses.replace(db_config, password="not-the-password", connect_retry_seconds=30)
    waits: list[float] = []
    with pytest.raises(pymysql.err.OperationalError) as failed:
        connect(cfg, sleep=waits.append)
    assert failed.value.args[0] == 1045 and waits == []


def test_the_retry_window_comes_from_the_environment() -> None:
    env = {"MYSQL_HOST": "db", "MYSQL_CONNECT_RETRY_SECONDS": "7.5"}
    assert DbConfig.from_env(env).connect_retry_seconds == 7.5
    assert DbConfig.from_env({"MYSQL_HOST": "db"}).connect_retry_seconds == 30.0
    with pytest.raises(ValueError, match="MYSQL_CONNECT_RETRY_SECONDS"):
        DbConfig.from_env({**env, "MYSQL_CONNECT_RETRY_SECONDS": "soon"})
