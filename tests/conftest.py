"""Fixtures for every test folder; the plain helpers they share are in tests/helpers.py."""
from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests.helpers import GL, SHARED, gl_lines

if TYPE_CHECKING:
    from lm.tokenizer import Tokenizer


def pytest_configure(config: pytest.Config) -> None:
    if not GL.is_dir():
        raise pytest.UsageError(f"real test data not found at {SHARED} (set SCARCE_LM_SHARED_DATA)")


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # Downloads and `datasets` caches never touch the user's home during tests.
    cache = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setenv("SCARCE_LM_CACHE", str(cache / "scarce"))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("SCARCE_LM_MIRROR", raising=False)


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    """A 512-piece tokenizer trained on the first 400 lines of gl-ctg's train split."""
    from lm.tokenizer import train_tokenizer
    return train_tokenizer(gl_lines("train", 400), 512)
