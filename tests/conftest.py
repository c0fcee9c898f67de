"""Shared fixtures: every test runs offscreen, on the CPU, with its own Studio home."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PYTHONHASHSEED", "0")
# One OpenMP thread, set before torch loads (torch.set_num_threads(1) alone leaves other
# thread pools at their default): the tests that compare the studio's samples with plain
# diffusers' in a subprocess (which has OMP_NUM_THREADS=1) need the same float reductions.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def studio_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Runs, caches and the demo dataset go to a fresh folder, never the user's home."""
    home = tmp_path_factory.mktemp("studio_home")
    monkeypatch.setenv("STUDIO_HOME", str(home))
    return home


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    """Two cores on CI: one torch thread per test process keeps timings steady."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    torch.set_num_threads(1)
    yield


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to reach the network (a model hub) fails loudly instead of hanging or passing
    unnoticed. Use with ``pytest.mark.usefixtures("no_network")``."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
