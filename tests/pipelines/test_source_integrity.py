"""Nothing lost, nothing silent, round two: a source file replaced while a build reads it, a
download that never ends, stale partial downloads, and CR-only line endings.

* The bytes a build uses are the bytes it hashed: a source replaced between resolving and reading
  (here, the moment the corpus lock is taken) is refused with one line, pinned or not, and nothing
  is published or cached under the old hash; a staged copy is checked the same way.
* A download has a total deadline (`fetch.DOWNLOAD_DEADLINE_S`), not only a timeout per read, and
  leaves no `.part-*` file; one left by a killed process is removed by the next run unless its
  owner may still be writing it.
* `format = "lines"` breaks lines at `\\n`, `\\r\\n` and a lone `\\r`, as universal newlines do.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

import pipelines.build
import pipelines.fetch
from pipelines import readers
from pipelines.build import main as build_main
from pipelines.errors import SourceError, run_cli
from pipelines.fetch import resolve_sources
from pipelines.lock import CorpusLock
from pipelines.normalise import normalise_text
from pipelines.spec import load_spec
from pipelines.staging import stage_source

from tests.helpers import SPLITS, QuietHandler, gl_lines, read_split, serving, write_spec

OLD, NEW = gl_lines("train", 30), gl_lines("dev", 30)


def as_bytes(lines: list[str], sep: str = "\n") -> bytes:
    return (sep.join(lines) + sep).encode("utf-8")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def replace_file(path: Path, data: bytes) -> None:
    """Replace `path` the way an editor or a download script does: a new file renamed over it."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def replace_when_locked(monkeypatch: pytest.MonkeyPatch, path: Path, data: bytes) -> None:
    """The source is replaced the moment the next build takes the corpus lock (after it was
    resolved); later builds run undisturbed."""
    pending = [data]

    class Replacing(CorpusLock):
        def __enter__(self):
            if pending:
                replace_file(path, pending.pop())
            return super().__enter__()

    monkeypatch.setattr(pipelines.build, "CorpusLock", Replacing)


def source_spec(folder: Path, data: bytes, pin: str | None = None, name: str = "corpus") -> Path:
    (folder / "src.txt").write_bytes(data)
    pinned = f'sha256 = "{pin}"\n' if pin else ""
    return write_spec(folder, f'[[sources]]\npath = "src.txt"\nformat = "lines"\n{pinned}', name=name)


def built(spec: Path, out: Path) -> tuple[str, set[str]]:
    """Build; (the manifest's sha256 of the only source, the kept texts)."""
    assert run_cli(build_main, [str(spec), "--out", str(out)]) == 0
    version_dir = out / load_spec(spec).name / (out / load_spec(spec).name / "LATEST").read_text().strip()
    manifest = json.loads((version_dir / "manifest.json").read_text())
    return manifest["sources"][0]["sha256"], {r["text"] for s in SPLITS for r in read_split(version_dir, s)}


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line on stderr (other notices may come before it), without a traceback."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def normalised(lines: list[str]) -> set[str]:
    return {normalise_text(line) for line in lines}


def test_source_replaced_during_the_build_is_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    """The manifest's sha256 is always the sha256 of the text in the shards: a source replaced
    after it was hashed fails the build with one line; the next builds, of the new file and of the
    old one restored, each record and serve their own text (no cache entry under the wrong hash)."""
    old, new = as_bytes(OLD), as_bytes(NEW)
    spec, out = source_spec(tmp_path, old), tmp_path / "out"
    replace_when_locked(monkeypatch, tmp_path / "src.txt", new)
    assert run_cli(build_main, [str(spec), "--out", str(out)]) == 1
    err = error_line(capsys)
    assert "source src:" in err and "changed" in err and sha(old) in err and sha(new) in err
    assert not (out / "corpus" / "LATEST").exists()
    assert built(spec, out) == (sha(new), normalised(NEW))
    replace_file(tmp_path / "src.txt", old)
    assert built(spec, out) == (sha(old), normalised(OLD))


def test_pinned_sha256_is_checked_against_the_bytes_read(tmp_path: Path, monkeypatch, capsys) -> None:
    """A source pinned to the old content and replaced after it was checked is refused, naming the pin."""
    old, new = as_bytes(OLD), as_bytes(NEW)
    spec, out = source_spec(tmp_path, old, pin=sha(old)), tmp_path / "out"
    replace_when_locked(monkeypatch, tmp_path / "src.txt", new)
    assert run_cli(build_main, [str(spec), "--out", str(out)]) == 1
    err = error_line(capsys)
    assert "source src:" in err and "pinned" in err
    assert sha(old) in err and sha(new) in err
    assert not (out / "corpus" / "LATEST").exists()


def test_reader_and_staging_refuse_bytes_other_than_those_resolved(tmp_path: Path) -> None:
    """Without Beam: the reader (text and Parquet) and the copy to a staging location hash what
    they read, and a file replaced since it was resolved is a SourceError, not other text."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    spec = load_spec(source_spec(tmp_path, as_bytes(OLD)))
    (resolved,) = resolve_sources(spec)
    assert [e["text"] for kind, e in readers.read_source(readers.source_info(resolved, spec))] == OLD
    copy = stage_source(resolved, str(tmp_path / "first"))
    assert Path(copy.local).name == f"{sha(as_bytes(OLD))}-src.txt" and Path(copy.local).read_bytes() == as_bytes(OLD)
    replace_file(tmp_path / "src.txt", as_bytes(NEW))
    with pytest.raises(SourceError, match=f"source src: .*changed.*{sha(as_bytes(NEW))}"):
        list(readers.read_source(readers.source_info(resolved, spec)))
    staged = tmp_path / "staged"
    with pytest.raises(SourceError, match="source src: .*changed"):
        stage_source(resolved, str(staged))
    assert not [p for p in staged.rglob("*") if p.is_file()]  # nothing staged under the old hash
    pq.write_table(pa.table({"text": OLD}), tmp_path / "t.parquet")
    spec = load_spec(write_spec(tmp_path, '[[sources]]\npath = "t.parquet"\nformat = "parquet"\n', name="pq"))
    (resolved,) = resolve_sources(spec)
    pq.write_table(pa.table({"text": NEW}), tmp_path / "t.parquet")
    with pytest.raises(SourceError, match="source t: .*changed"):
        list(readers.read_source(readers.source_info(resolved, spec)))


@pytest.fixture()
def trickle_server() -> Iterator[str]:
    """Sends a 400-byte body one byte every 50 ms (20 s in all): every read is quick, the whole is not."""
    class Trickle(QuietHandler):
        def do_GET(self) -> None:
            data = as_bytes(OLD)[:400]
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            for i in range(len(data)):
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
                time.sleep(0.05)

    with serving(Trickle) as base:
        yield base


def test_download_has_a_total_deadline(tmp_path: Path, trickle_server: str, monkeypatch, capsys) -> None:
    """A server that never stops sending slowly: one line naming the URL and the deadline, exit 1,
    no partial file left."""
    monkeypatch.setattr(pipelines.fetch, "DOWNLOAD_DEADLINE_S", 0.5, raising=False)
    monkeypatch.setenv("SCARCE_LM_CACHE", str(tmp_path / "scarce"))
    url = f"{trickle_server}/slow.txt"
    spec = write_spec(tmp_path, f'[[sources]]\nurl = "{url}"\nformat = "lines"\n')
    started = time.monotonic()
    assert run_cli(build_main, [str(spec), "--out", str(tmp_path / "out")]) == 1
    assert time.monotonic() - started < 10
    err = error_line(capsys)
    assert url in err and "deadline" in err
    assert not [p for p in (tmp_path / "scarce").rglob("*") if p.is_file()]


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_partial_downloads_are_removed(tmp_path: Path, monkeypatch) -> None:
    """`.part-PID@HOST.*` of a process gone, and any `.part-*` untouched for longer than a download
    may last, go at the next run; one a live process (or another machine) may still be writing stays."""
    monkeypatch.setenv("SCARCE_LM_CACHE", str(tmp_path / "scarce"))
    cache = tmp_path / "scarce" / "downloads"
    cache.mkdir(parents=True)
    host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())
    stale = {f".part-{dead_pid()}@{host}.k3j4h5g6", ".part-oldstyle1"}
    live = {f".part-{os.getpid()}@{host}.a1b2c3d4", ".part-123@another-machine.x9y8z7w6", ".part-freshold"}
    for name in stale | live:
        (cache / name).write_bytes(b"half a download")
    long_ago = time.time() - 2 * (getattr(pipelines.fetch, "DOWNLOAD_DEADLINE_S", 3600) + pipelines.fetch.TIMEOUT_S)
    os.utime(cache / ".part-oldstyle1", (long_ago, long_ago))
    resolve_sources(load_spec(source_spec(tmp_path, as_bytes(OLD))))
    assert {p.name for p in cache.iterdir()} == live


def test_cr_only_line_endings_are_line_breaks(tmp_path: Path) -> None:
    """Real lines joined with a lone CR are one unit each, at their character offsets; CRLF stays
    one break (no empty units), and a file mixing all three endings reads the same lines."""
    lines = gl_lines("train", 50)
    for sep in ("\r", "\r\n", None):
        if sep is None:
            ends = ["\n", "\r", "\r\n"]
            text = "".join(line + ends[i % 3] for i, line in enumerate(lines))
        else:
            text = sep.join(lines) + sep
        (tmp_path / "cr.txt").write_bytes(text.encode("utf-8"))
        spec = load_spec(write_spec(tmp_path, '[[sources]]\npath = "cr.txt"\nformat = "lines"\n', name="cr"))
        (resolved,) = resolve_sources(spec)
        events = list(readers.read_source(readers.source_info(resolved, spec)))
        assert [kind for kind, _ in events] == ["ok"] * len(lines), repr(sep)
        assert [e["text"] for _, e in events] == lines
        assert [text[e["offset"]:e["offset"] + len(e["text"])] for _, e in events] == lines
        assert [e["pos"] for _, e in events] == list(range(len(lines)))
    paragraphs = "\r\r".join(" ".join(lines[i:i + 5]) for i in range(0, 50, 5)) + "\r\r"
    (tmp_path / "cr.txt").write_bytes(paragraphs.encode("utf-8"))
    spec = load_spec(write_spec(tmp_path, '[[sources]]\npath = "cr.txt"\nformat = "paragraphs"\n', name="cr"))
    (resolved,) = resolve_sources(spec)
    units = [e["text"] for kind, e in readers.read_source(readers.source_info(resolved, spec)) if kind == "ok"]
    assert units == [" ".join(lines[i:i + 5]) for i in range(0, 50, 5)]
