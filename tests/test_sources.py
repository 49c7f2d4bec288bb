"""Sources: every format, bad input as rejected records or one-line errors, mirrors and HTTP."""
from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path
from typing import Iterator

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.build import build, main as build_main
from pipelines.errors import SourceError, run_cli
from pipelines.fetch import resolve_sources
from pipelines.normalise import normalise_text
from pipelines.spec import load_spec

from conftest import GL, check_accounting, gl_lines, read_rejected, read_split, write_spec

SPLITS = ("train", "dev", "test")


def kept_texts(version_dir: Path) -> list[str]:
    return [r["text"] for s in SPLITS for r in read_split(version_dir, s)]


def test_bad_inputs_become_rejected_records(tmp_path: Path) -> None:
    good = gl_lines("train", 40)
    (tmp_path / "good.txt").write_text("\n".join(good) + "\n", encoding="utf-8")
    (tmp_path / "binary.bin").write_bytes(bytes(range(256)) * 64)
    (tmp_path / "empty.txt").write_bytes(b"")
    latin = gl_lines("dev", 5)
    (tmp_path / "latin1.txt").write_bytes(("\n".join(latin) + "\n").encode("latin-1", "replace"))
    long_line = "palabra " * 400_000  # 3.2 MB on one line
    (tmp_path / "long.txt").write_text(good[0] + "\n" + long_line + "\n" + good[1] + "\n", encoding="utf-8")
    other = gl_lines("train", 60)[50:]
    mixed = [other[0].encode(), b"bad \xff\xfe bytes in Galician: " + latin[0].encode("latin-1", "replace"),
             "control\x01 and\x07 characters stay out: ".encode() + other[1].encode(), "Ã© mojibake: ".encode() + other[2].encode()]
    (tmp_path / "mixed.txt").write_bytes(b"\n".join(mixed) + b"\n")
    sources = "".join(f'[[sources]]\npath = "{name}"\nformat = "lines"\n'
                      for name in ("good.txt", "binary.bin", "empty.txt", "latin1.txt", "long.txt", "mixed.txt"))
    result = build(load_spec(write_spec(tmp_path, sources)), str(tmp_path / "out"))
    version_dir = Path(result["path"])
    stats = result["stats"]
    check_accounting(stats, version_dir)
    read_reasons = stats["stages"]["read"]
    assert read_reasons == {"binary": 1, "empty_source": 1, "too_long": 1, "bad_utf8": 6}
    rejected = read_rejected(version_dir)
    by_source = {r["source"]: r for r in rejected if r["stage"] == "read"}
    assert by_source["binary"]["reason"] == "binary" and by_source["empty"]["reason"] == "empty_source"
    long_rej = [r for r in rejected if r["reason"] == "too_long"][0]
    assert long_rej["source"] == "long" and long_rej["offset"] == len(good[0]) + 1
    kept = set(kept_texts(version_dir))
    assert {normalise_text(g) for g in good} <= kept  # every good line survives, long.txt's too
    assert not any("\x01" in t or "\x07" in t for t in kept)
    assert any(t.startswith("é mojibake") for t in kept)  # ftfy repaired it


def test_missing_file_and_checksum_mismatch_are_one_line_errors(tmp_path: Path, capsys) -> None:
    spec = write_spec(tmp_path, '[[sources]]\npath = "nope.txt"\nformat = "lines"\n')
    assert run_cli(build_main, [str(spec), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "source nope" in err and "not found" in err
    (tmp_path / "a.txt").write_text("\n".join(gl_lines("train", 5)), encoding="utf-8")
    spec = write_spec(tmp_path, f'[[sources]]\npath = "a.txt"\nformat = "lines"\nsha256 = "{"0" * 64}"\n')
    assert run_cli(build_main, [str(spec), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "source a" in err and "checksum mismatch" in err
    assert not (tmp_path / "out").exists()


def test_every_format(tmp_path: Path) -> None:
    sents = gl_lines("train", 120)
    (tmp_path / "docs.jsonl").write_text(
        "\n".join([json.dumps({"text": s, "n": i}) for i, s in enumerate(sents[:20])] + ["{not json", '{"other": 1}']) + "\n",
        encoding="utf-8")
    conllu = []
    for i, s in enumerate(sents[20:40]):
        conllu += [f"# sent_id = {i}", f"# text = {s}", "1\tx\tx\tX\t_\t_\t0\troot\t_\t_", ""]
    (tmp_path / "tree.conllu").write_text("# newdoc id = d1\n" + "\n".join(conllu), encoding="utf-8")
    pq.write_table(pa.table({"body": sents[40:60] + [None]}), tmp_path / "rows.parquet")
    paragraphs = ["\n".join(sents[i:i + 5]) for i in range(60, 100, 5)]
    (tmp_path / "paras.txt").write_text("\n\n".join(paragraphs) + "\n", encoding="utf-8")
    (tmp_path / "doc.txt").write_text(" ".join(sents[100:110]), encoding="utf-8")
    datasets.Dataset.from_dict({"sentence": sents[110:120]}).save_to_disk(str(tmp_path / "hfdata"))
    spec = write_spec(tmp_path, """
[[sources]]
path = "docs.jsonl"
format = "jsonl"
[[sources]]
path = "tree.conllu"
format = "conllu"
[[sources]]
path = "rows.parquet"
format = "parquet"
column = "body"
[[sources]]
path = "paras.txt"
format = "paragraphs"
[[sources]]
path = "doc.txt"
format = "document"
[[sources]]
hf = "hfdata"
column = "sentence"
[dedup]
near = "off"
""")
    result = build(load_spec(spec), str(tmp_path / "out"))
    version_dir = Path(result["path"])
    stats = result["stats"]
    check_accounting(stats, version_dir)
    per_source = {k: v["kept"] for k, v in stats["sources"].items()}
    assert per_source["docs"] == 20 and per_source["tree"] == 20 and per_source["rows"] == 20
    assert per_source["hfdata"] == 10
    assert stats["sources"]["docs"]["by_reason"] == {"bad_json": 1, "missing_field": 1}
    # Punkt, trained on the source itself, recovers the original sentences from paragraphs and a document.
    kept = set(kept_texts(version_dir))
    for lo, hi, name in ((60, 100, "paras"), (100, 110, "doc")):
        expected = {normalise_text(s) for s in sents[lo:hi]}
        assert len(expected & kept) >= 0.8 * len(expected), name
    assert stats["segment"]["units_in"] == 9 and stats["segment"]["sentences_out"] >= 45
    rows = read_split(version_dir, "train") + read_split(version_dir, "dev") + read_split(version_dir, "test")
    tree = sorted((r["pos"], r["text"]) for r in rows if r["source"] == "tree")
    assert {r["doc"] for r in rows if r["source"] == "tree"} == {"tree:d1"}
    assert [t for _, t in tree][:3] == [normalise_text(s) for s in sents[20:23] if normalise_text(s) in kept][:3]


@pytest.fixture()
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()


def test_http_download_checksum_and_cache(tmp_path: Path, http_root: tuple[str, Path], capsys) -> None:
    base, root = http_root
    data = (GL / "dev.txt").read_bytes()
    (root / "raw_dev.txt").write_bytes(data)
    good = hashlib.sha256(data).hexdigest()
    spec = write_spec(tmp_path, f'[[sources]]\nname = "dev"\nurl = "{base}/raw_dev.txt"\nsha256 = "{good}"\nformat = "lines"\n')
    result = build(load_spec(spec), str(tmp_path / "out"))
    assert result["stats"]["input"] == len(gl_lines("dev"))
    # Now cached by content: the server can go away.
    (root / "raw_dev.txt").unlink()
    (resolved,) = resolve_sources(load_spec(spec))
    assert resolved.origin == "cache" and resolved.sha256 == good
    # A file on the server that is not what the spec pinned fails with a one-line error.
    (root / "raw_test.txt").write_bytes((GL / "test.txt").read_bytes())
    pinned = hashlib.sha256(b"what the spec author downloaded").hexdigest()
    bad = write_spec(tmp_path, f'[[sources]]\nname = "t"\nurl = "{base}/raw_test.txt"\nsha256 = "{pinned}"\nformat = "lines"\n', name="bad")
    assert run_cli(build_main, [str(bad), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert "source t: checksum mismatch" in err and pinned in err and err.count("\n") == 0
    # Unreachable host: clear advice to use a mirror.
    gone = write_spec(tmp_path, '[[sources]]\nurl = "http://127.0.0.1:9/x.txt"\nformat = "lines"\n', name="gone")
    assert run_cli(build_main, [str(gone), "--out", str(tmp_path / "out")]) == 1
    assert "--mirror" in capsys.readouterr().err


def test_mirror_matches_by_sha256_and_by_name(tmp_path: Path, monkeypatch, capsys) -> None:
    mirror = tmp_path / "mirror" / "deep"
    mirror.mkdir(parents=True)
    (mirror / "renamed.txt").write_bytes((GL / "test.txt").read_bytes())
    (mirror / "plain.txt").write_bytes((GL / "dev.txt").read_bytes())
    sha = hashlib.sha256((GL / "test.txt").read_bytes()).hexdigest()
    spec = write_spec(tmp_path, f"""
[[sources]]
url = "https://example.invalid/raw_test.txt"
sha256 = "{sha}"
format = "lines"
[[sources]]
url = "https://example.invalid/plain.txt"
format = "lines"
""")
    a, b = resolve_sources(load_spec(spec), mirror=str(tmp_path / "mirror"))
    assert Path(a.local).name == "renamed.txt" and Path(b.local).name == "plain.txt"
    assert a.origin == b.origin == "mirror"
    monkeypatch.setenv("SCARCE_LM_MIRROR", str(tmp_path / "mirror"))
    assert resolve_sources(load_spec(spec))[0].local == a.local
    missing = write_spec(tmp_path, f'[[sources]]\nurl = "https://example.invalid/a.txt"\nsha256 = "{"1" * 64}"\nformat = "lines"\n', name="m")
    with pytest.raises(SourceError, match="mirror .* has no file with sha256"):
        resolve_sources(load_spec(missing), mirror=str(tmp_path / "mirror"))
