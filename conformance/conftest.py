"""Fixtures: a shared `tessera serve` for most tests, and private servers for the
tests that kill, restart or move the clock of theirs."""

from __future__ import annotations

import itertools

import pytest

from harness import TesseraServer, World, tessera_bin

_running: list[TesseraServer] = []
_counter = itertools.count(1)


def pytest_sessionstart(session):
    binary = tessera_bin()
    if not binary.is_file():
        raise pytest.UsageError(
            f"tessera binary not found at {binary}; build it with "
            "`cargo build --release -p tessera` or set TESSERA_BIN")


def _new_server(tmp_path_factory, *, test_clock: bool = True, config_from_env: bool = False,
                start: bool = True, **kw) -> TesseraServer:
    n = next(_counter)
    base = tmp_path_factory.mktemp(f"tessera-{n}")
    server = TesseraServer(base / "data", base / "server.log", test_clock=test_clock,
                           config_from_env=config_from_env, **kw)
    _running.append(server)
    if start:
        server.start()
    return server


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The shared server. Its test clock is never moved (tests that move time
    use `private_world`)."""
    s = _new_server(tmp_path_factory)
    yield s
    s.stop()


@pytest.fixture(scope="session")
def world(server) -> World:
    return World(server)


@pytest.fixture
def make_server(tmp_path_factory):
    """Factory for private servers; every one is stopped at teardown."""
    made: list[TesseraServer] = []

    def make(**kw) -> TesseraServer:
        s = _new_server(tmp_path_factory, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


@pytest.fixture
def private_world(make_server) -> World:
    """A fresh server (with the test clock) and fresh accounts, for one test."""
    return World(make_server(), tag="private")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        for s in _running:
            if s.running():
                rep.sections.append((f"tessera log {s.log_path.parent.name}", s.log_tail(30)))


def pytest_sessionfinish(session, exitstatus):
    for s in _running:
        try:
            s.stop()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
