"""Shared fixtures: the real text in ../shared/data and a helper that builds a spec."""
from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SCARCE_LM_SHARED_DATA", ROOT.parent / "shared" / "data"))
GL = SHARED / "gl-ctg"
SHAKESPEARE = SHARED / "tinyshakespeare" / "input.txt"


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


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A request handler for the tests' local servers: no request log on stderr."""

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def serving(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """A loopback HTTP server (plain http is allowed only there) answering with `handler`; yields
    its base URL and shuts it down afterwards."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def gl_lines(split: str, n: int | None = None) -> list[str]:
    lines = [line for line in (GL / f"{split}.txt").read_text(encoding="utf-8").split("\n") if line.strip()]
    return lines if n is None else lines[:n]


def write_spec(folder: Path, body: str, name: str = "corpus") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(f'name = "{name}"\nlanguage = "gl"\n' + body, encoding="utf-8")
    return path


def gl_split_spec(folder: Path, counts: tuple[int, int, int], extra: str, name: str) -> Path:
    """A spec over the first `counts` lines of gl-ctg's train, dev and test, split by source,
    with `extra` (tables such as [augment]) appended."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in zip(("train", "dev", "test"), counts):
        (folder / f"{split}.txt").write_text("\n".join(gl_lines(split, n)) + "\n", encoding="utf-8")
    sources = "".join(f'[[sources]]\npath = "{s}.txt"\nformat = "lines"\nsplit = "{s}"\n' for s in ("train", "dev", "test"))
    return write_spec(folder, sources + '[split]\nmethod = "source"\n' + extra, name=name)


def read_split(version_dir: Path, split: str) -> list[dict[str, Any]]:
    return pq.read_table(version_dir / split).to_pylist()


def read_rejected(version_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for p in sorted((version_dir / "rejected").glob("*.jsonl")):
        rows += [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines()]
    return rows


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def check_accounting(stats: dict[str, Any], version_dir: Path) -> None:
    """input = kept + rejected + duplicates, at the top and per source; kept = rows of all splits."""
    assert stats["input"] == stats["kept"] + stats["rejected"] + stats["duplicates"]
    for name, s in stats["sources"].items():
        assert s["input"] == s["kept"] + s["rejected"] + s["duplicates"], name
    rows = sum(len(read_split(version_dir, s)) for s in ("train", "dev", "test"))
    assert rows == stats["kept"] == sum(stats["splits"].values())
    assert len(read_rejected(version_dir)) == stats["rejected"] + stats["duplicates"]
