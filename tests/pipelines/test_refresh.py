"""Scheduled refreshes on real gl-ctg text: no-op when unchanged, incremental, guarded, locked."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.errors import run_cli
from pipelines.lock import CorpusLock
from pipelines.records import record_id
from pipelines.refresh import main as refresh_main, prune, split_ids

from tests.helpers import ROOT, QuietHandler, gl_lines, serving, write_spec

SOURCES = ("a", "b", "c")


def make_corpus(folder: Path, near: str = "keep") -> Path:
    lines = gl_lines("train", 450)
    for i, name in enumerate(SOURCES):
        (folder / f"{name}.txt").write_text("\n".join(lines[150 * i:150 * (i + 1)]) + "\n", encoding="utf-8")
    body = "".join(f'[[sources]]\npath = "{n}.txt"\nformat = "lines"\n' for n in SOURCES)
    return write_spec(folder, body + f'[split]\nmethod = "hash"\ndev = 0.1\ntest = 0.15\n[dedup]\nnear = "{near}"\n',
                      name="fresh")


def refresh_json(spec: Path, out: Path, *extra: str, capsys) -> tuple[int, dict]:
    code = run_cli(refresh_main, [str(spec), "--out", str(out), "--json", *extra])
    lines = capsys.readouterr().out.strip().splitlines()
    return code, (json.loads(lines[-1]) if lines else {})


def latest(out: Path) -> str:
    return (out / "fresh" / "LATEST").read_text().strip()


def cli(spec: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipelines.refresh", str(spec), "--out", str(out), "--json", *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture()
def corpus(tmp_path: Path, capsys) -> tuple[Path, Path]:
    spec = make_corpus(tmp_path)
    out = tmp_path / "out"
    code, result = refresh_json(spec, out, capsys=capsys)
    assert code == 0 and result["status"] == "published" and result["previous"] is None
    return spec, out


def test_unchanged_refresh_is_a_noop(corpus, capsys, monkeypatch) -> None:
    """Unchanged sources: no pipeline runs (nothing is re-processed) and no file is written."""
    import pipelines.refresh

    spec, out = corpus
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in out.rglob("*")}
    staged: list[str] = []
    real_stage = pipelines.refresh.stage_snapshot
    monkeypatch.setattr(pipelines.refresh, "stage_snapshot",
                        lambda spec, *a, **k: staged.append(spec.name) or real_stage(spec, *a, **k))
    code, result = refresh_json(spec, out, capsys=capsys)
    assert code == 0 and result == {"status": "unchanged", "version": latest(out), "name": "fresh"}
    assert staged == []  # no source re-read, no dedup, no split: the pipeline never started
    after = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in out.rglob("*")}
    assert after == before  # not one file written, touched or added


def test_grown_source_reprocesses_only_it_and_moves_nothing(corpus, capsys) -> None:
    spec, out = corpus
    old_version = latest(out)
    old = split_ids(out / "fresh" / old_version)
    (shard,) = (out / "fresh" / old_version / "test").glob("*.parquet")
    test_sentence = pq.read_table(shard).column("text").to_pylist()[3]
    near_copy = test_sentence.rstrip(".") + " e algo máis."
    new_lines = gl_lines("dev", 40) + [near_copy]
    with open(spec.parent / "b.txt", "a", encoding="utf-8") as f:
        f.write("\n".join(new_lines) + "\n")
    code, result = refresh_json(spec, out, capsys=capsys)
    assert code == 0 and result["status"] == "published" and result["previous"] == old_version
    assert result["changed_sources"] == ["b"] and result["processed_sources"] == ["b"]
    assert result["added"] >= 35 and result["removed"] == 0
    new = split_ids(out / "fresh" / latest(out))
    assert all(new[i] == s for i, s in old.items())  # no old sentence changed split
    assert new[record_id(near_copy)] == "test"  # a near-copy of a test sentence joins test


def test_url_source_is_fetched_only_when_it_changes(tmp_path: Path, capsys) -> None:
    root = tmp_path / "www"
    root.mkdir()
    (root / "news.txt").write_text("\n".join(gl_lines("dev", 120)) + "\n", encoding="utf-8")
    gets: list[int] = []

    class ETagHandler(QuietHandler):
        def do_GET(self) -> None:
            data = (root / "news.txt").read_bytes()
            etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
            if self.headers.get("If-None-Match") == etag:
                gets.append(304)
                self.send_response(304)
                self.send_header("ETag", etag)
                self.end_headers()
                return
            gets.append(200)
            self.send_response(200)
            self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    with serving(ETagHandler) as base:
        url = f"{base}/news.txt"
        spec = write_spec(tmp_path, f'[[sources]]\nurl = "{url}"\nformat = "lines"\n', name="fresh")
        out = tmp_path / "out"
        assert refresh_json(spec, out, capsys=capsys)[1]["status"] == "published"
        assert refresh_json(spec, out, capsys=capsys)[1]["status"] == "unchanged"
        assert gets == [200, 304]
        with open(root / "news.txt", "a", encoding="utf-8") as f:
            f.write("\n".join(gl_lines("test", 20)) + "\n")
        code, result = refresh_json(spec, out, capsys=capsys)
        assert code == 0 and result["status"] == "published" and result["changed_sources"] == ["news"]
        assert gets == [200, 304, 200]


def test_killed_refresh_leaves_latest_and_next_one_cleans_up(corpus) -> None:
    spec, out = corpus
    corpus_dir = out / "fresh"
    lines = gl_lines("dev", 90)
    # kill the refresh while a staging folder exists; on a fast machine a run can finish between
    # two looks, and then the next attempt (with more new text) tries again
    for attempt in range(3):
        before = latest(out)
        with open(spec.parent / "c.txt", "a", encoding="utf-8") as f:
            f.write("\n".join(lines[30 * attempt:30 * attempt + 30]) + "\n")
        proc = cli(spec, out)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            staging = [p for p in [*corpus_dir.iterdir(), *(corpus_dir / ".cache" / "sources").iterdir()]
                       if p.name.startswith(".staging-")]
            if staging:
                break
            time.sleep(0.01)
        if proc.poll() is None:
            break
        assert proc.communicate()[0] and latest(out) != before  # finished: published, try again
    else:
        pytest.fail("three refreshes finished before a staging folder was seen")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert latest(out) == before
    done = cli(spec, out)
    stdout, stderr = done.communicate(timeout=300)
    assert done.returncode == 0, stderr
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["status"] == "published" and result["stale_staging_removed"]
    assert not [p for p in corpus_dir.rglob(".staging-*")]


def test_two_concurrent_refreshes_one_publishes_other_exits_75(corpus, capsys) -> None:
    """While the corpus lock is held (here by the test, as a running refresh holds it), the
    refresh command exits 75 at once and writes nothing; once it is released a refresh publishes."""
    spec, out = corpus
    before = latest(out)
    with open(spec.parent / "a.txt", "a", encoding="utf-8") as f:
        f.write("\n".join(gl_lines("dev", 30)) + "\n")
    files = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    with CorpusLock(out / "fresh"):  # flock: a second open() of .lock conflicts, even in one process
        second = cli(spec, out)
        _, err = second.communicate(timeout=300)
        assert second.returncode == 75 and "try again later" in err, err
        assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == files and latest(out) == before
    code, result = refresh_json(spec, out, capsys=capsys)
    assert code == 0 and result["status"] == "published" and result["previous"] == before
    assert latest(out) == result["version"] != before


def test_refresh_that_would_move_a_record_between_splits_publishes_nothing(corpus, capsys, monkeypatch) -> None:
    """Validation's `moved` rule: new split fractions with the previous snapshot's pins lost (as a
    bug in pinning would lose them) would move earlier records; exit 1, nothing published."""
    import pipelines.build_corpus

    spec, out = corpus
    before = latest(out)
    old = split_ids(out / "fresh" / before)
    spec.write_text(spec.read_text().replace("dev = 0.1\ntest = 0.15", "dev = 0.05\ntest = 0.2"), encoding="utf-8")
    monkeypatch.setattr(pipelines.build_corpus, "split_files", lambda version_dir: [])
    code = run_cli(refresh_main, [str(spec), "--out", str(out), "--max-shrink", "0.99"])
    err = capsys.readouterr().err
    assert code == 1 and "previous records would change split (e.g." in err and f"LATEST still names {before}" in err
    assert "shrink" not in err  # the moved rule alone stopped it
    assert latest(out) == before and split_ids(out / "fresh" / before) == old
    assert {p.name for p in (out / "fresh").iterdir() if not p.name.startswith(".")} == {"HISTORY", "LATEST", before}
    assert not list((out / "fresh").glob(".staging-*"))


def test_sudden_shrink_publishes_nothing(corpus, capsys) -> None:
    spec, out = corpus
    before = latest(out)
    (spec.parent / "a.txt").write_text("\n".join(gl_lines("train", 15)) + "\n", encoding="utf-8")
    (spec.parent / "b.txt").write_text("\n".join(gl_lines("train", 165)[150:]) + "\n", encoding="utf-8")
    code = run_cli(refresh_main, [str(spec), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "shrink: split train would lose" in err and f"LATEST still names {before}" in err
    assert latest(out) == before
    assert not list((out / "fresh").glob(".staging-*"))
    assert {p.name for p in (out / "fresh").iterdir() if not p.name.startswith(".")} == {"HISTORY", "LATEST", before}


def test_keep_never_deletes_latest_and_then_runs_only_on_publish(corpus, capsys) -> None:
    spec, out = corpus
    corpus_dir = out / "fresh"
    flag = spec.parent / "then.txt"
    then = f"{sys.executable} -c \"open('{flag}', 'a').write('ran')\""
    versions = [latest(out)]
    for i in range(2):
        with open(spec.parent / "a.txt", "a", encoding="utf-8") as f:
            f.write("\n".join(gl_lines("test", 20 * (i + 1))[20 * i:]) + "\n")
        code, result = refresh_json(spec, out, "--keep", "2", "--then", then, capsys=capsys)
        assert code == 0 and result["status"] == "published"
        versions.append(result["version"])
    assert flag.read_text() == "ranran"
    assert not (corpus_dir / versions[0]).exists() and (corpus_dir / versions[1]).exists()
    refresh_json(spec, out, "--then", then, capsys=capsys)  # unchanged: --then does not run
    assert flag.read_text() == "ranran"
    # Roll back to the older version, then prune hard: LATEST's version survives.
    (corpus_dir / "LATEST").write_text(versions[1] + "\n")
    assert prune(corpus_dir, 1) == []
    assert (corpus_dir / versions[1]).exists() and (corpus_dir / versions[2]).exists()
