"""Shared pytest fixtures."""

from __future__ import annotations

import pytest
import torch

from vppkit.utils.paths import davis_root


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def davis_dir():
    """The real DAVIS-2016 subset (``VPPKIT_DAVIS_ROOT``, default ``../shared/data/davis2016-240p``)."""
    root = davis_root()
    if not (root / "JPEGImages").is_dir():
        pytest.skip(f"DAVIS subset not found at {root} (set VPPKIT_DAVIS_ROOT to a DAVIS folder to run this test)")
    return root


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    """A private ``VPPKIT_CACHE`` (generated data, runs) under the test's tmp folder; one torch thread."""
    monkeypatch.setenv("VPPKIT_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    return tmp_path
