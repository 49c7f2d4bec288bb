"""Sources: every format, bad input as rejected records or one-line errors, mirrors and HTTP."""
from __future__ import annotations

import hashlib
import http.server
import json
import re
import time
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

from tests.helpers import (GL, SPLITS, QuietHandler, check_accounting, gl_lines, read_rejected, read_split, serving,
                           sources_toml, write_spec)


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

    class Files(http.server.SimpleHTTPRequestHandler, QuietHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

    with serving(Files) as base:
        yield base, root


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
    spec = write_spec(tmp_path, "\n" + sources_toml(
        {"url": "https://example.invalid/raw_test.txt", "sha256": sha, "format": "lines"},
        {"url": "https://example.invalid/plain.txt", "format": "lines"}))
    a, b = resolve_sources(load_spec(spec), mirror=str(tmp_path / "mirror"))
    assert Path(a.local).name == "renamed.txt" and Path(b.local).name == "plain.txt"
    assert a.origin == b.origin == "mirror"
    monkeypatch.setenv("SCARCE_LM_MIRROR", str(tmp_path / "mirror"))
    assert resolve_sources(load_spec(spec))[0].local == a.local
    missing = write_spec(tmp_path, f'[[sources]]\nurl = "https://example.invalid/a.txt"\nsha256 = "{"1" * 64}"\nformat = "lines"\n', name="m")
    with pytest.raises(SourceError, match="mirror .* has no file with sha256"):
        resolve_sources(load_spec(missing), mirror=str(tmp_path / "mirror"))


def read_all(spec_path: Path) -> dict[str, list[tuple[str, dict]]]:
    """The reader's events per source, without Beam."""
    from pipelines import readers

    spec = load_spec(spec_path)
    return {r.source.name: list(readers.read_source(readers.source_info(r, spec))) for r in resolve_sources(spec)}


def test_hf_source_config_and_assign(tmp_path: Path) -> None:
    """A local Hugging Face dataset folder with two configurations (README `configs:`, Parquet
    files): `config` picks one, `split` the `datasets` split to load (validation -> dev), and
    `assign` puts its records in another split of ours."""
    sents = gl_lines("train", 40)
    folder = tmp_path / "hfcfg"
    parts = {("pt", "train"): sents[0:10], ("pt", "validation"): sents[10:20],
             ("gl", "train"): sents[20:30], ("gl", "validation"): sents[30:40]}
    for (config, split), rows in parts.items():
        (folder / config).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"text": rows}), folder / config / f"{split}.parquet")
    configs = "".join(f"- config_name: {c}\n  data_files:\n" + "".join(
        f"  - split: {s}\n    path: {c}/{s}.parquet\n" for s in ("train", "validation")) for c in ("pt", "gl"))
    (folder / "README.md").write_text(f"---\nconfigs:\n{configs}---\n# two configurations\n", encoding="utf-8")
    spec = write_spec(tmp_path, """
[[sources]]
name = "gltrain"
hf = "hfcfg"
config = "gl"
split = "train"
[[sources]]
name = "glval"
hf = "hfcfg"
config = "gl"
split = "validation"
[[sources]]
name = "glheld"
hf = "hfcfg"
config = "gl"
split = "validation"
assign = "test"
""")
    events = read_all(spec)
    got = {name: [(e["text"], e["split"]) for kind, e in ev if kind == "ok"] for name, ev in events.items()}
    assert got == {"gltrain": [(t, "train") for t in sents[20:30]], "glval": [(t, "dev") for t in sents[30:40]],
                   "glheld": [(t, "test") for t in sents[30:40]]}


@pytest.fixture()
def slow_server() -> Iterator[str]:
    """Answers after two seconds (headers and body)."""
    class Slow(QuietHandler):
        def do_GET(self) -> None:
            time.sleep(2)
            data = b"Unha frase en galego que chega tarde.\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    with serving(Slow) as base:
        yield base


def test_download_timeout_is_a_source_error(tmp_path: Path, slow_server: str, monkeypatch) -> None:
    """A server slower than the download timeout: SourceError naming the source, the URL and the timeout."""
    import pipelines.fetch

    monkeypatch.setattr(pipelines.fetch, "TIMEOUT_S", 0.2)
    monkeypatch.setenv("SCARCE_LM_CACHE", str(tmp_path / "scarce"))
    url = f"{slow_server}/late.txt"
    spec = write_spec(tmp_path, f'[[sources]]\nurl = "{url}"\nformat = "lines"\n')
    with pytest.raises(SourceError, match=re.escape(f"source late: cannot download {url} (timed out)")):
        resolve_sources(load_spec(spec))
    assert not [p for p in (tmp_path / "scarce").rglob("*") if p.is_file()]


@pytest.fixture()
def unsized_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Serves files from a folder without a Content-Length header (the body ends when the connection closes)."""
    root = tmp_path / "unsized"
    root.mkdir()

    class NoLength(QuietHandler):
        def do_GET(self) -> None:
            data = (root / self.path.lstrip("/")).read_bytes()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(data)

    with serving(NoLength) as base:
        yield base, root


def test_download_over_max_bytes_is_refused(tmp_path: Path, http_root: tuple[str, Path],
                                            unsized_server: tuple[str, Path], monkeypatch) -> None:
    """`max_bytes` caps a download: by its Content-Length before reading, and while reading when
    the server sends none; nothing is left in the download cache either way."""
    cache = tmp_path / "scarce"
    monkeypatch.setenv("SCARCE_LM_CACHE", str(cache))
    data = (GL / "dev.txt").read_bytes()[:5000]
    for (base, root), said in ((http_root, "is 5000 bytes, over the cap of 4096"),
                               (unsized_server, "exceeds the cap of 4096 bytes")):
        (root / "big.txt").write_bytes(data)
        spec = write_spec(tmp_path, f'[[sources]]\nurl = "{base}/big.txt"\nformat = "lines"\nmax_bytes = 4096\n')
        with pytest.raises(SourceError, match=re.escape(f"source big: {base}/big.txt {said} (raise `max_bytes`)")):
            resolve_sources(load_spec(spec))
        assert not [p for p in cache.rglob("*") if p.is_file()]
    # At the cap exactly, it downloads.
    (unsized_server[1] / "fits.txt").write_bytes(data[:4096])
    spec = write_spec(tmp_path, f'[[sources]]\nurl = "{unsized_server[0]}/fits.txt"\nformat = "lines"\nmax_bytes = 4096\n')
    (resolved,) = resolve_sources(load_spec(spec))
    assert Path(resolved.local).read_bytes() == data[:4096] and resolved.origin == "download"


def test_mirror_names_are_literal_files_with_the_longest_path_suffix(tmp_path: Path, capsys) -> None:
    """`*.txt` and `[..]` are names, not patterns; a folder is never served; of `a/train.txt` and
    `b/train.txt`, `.../b/train.txt` gets b's; a pinned source is matched by its sha256 only."""
    mirror = tmp_path / "mirror"
    for rel, text in (("LICENSE.txt", "licence\n"), ("a/train.txt", "from a\n"), ("b/train.txt", "from b\n"),
                      ("x[ab].txt", "literal brackets\n"), ("a.txt", "a\n"), ("data/inner.txt", "inner\n")):
        (mirror / rel).parent.mkdir(parents=True, exist_ok=True)
        (mirror / rel).write_text(text, encoding="utf-8")

    def served(url: str, sha: str | None = None) -> Path:
        table = {"url": url, "name": "m", "format": "lines", **({"sha256": sha} if sha else {})}
        spec = write_spec(tmp_path, "\n" + sources_toml(table), name="m")
        return Path(resolve_sources(load_spec(spec), mirror=str(mirror))[0].local)

    assert served("https://example.invalid/corpus/b/train.txt") == mirror / "b" / "train.txt"
    assert served("https://example.invalid/a/train.txt") == mirror / "a" / "train.txt"
    assert served("https://example.invalid/x[ab].txt") == mirror / "x[ab].txt"
    for url in ("https://example.invalid/*.txt", "https://example.invalid/[ab].txt", "https://example.invalid/data"):
        with pytest.raises(SourceError, match="has no file with a file named"):
            served(url)
    wrong = hashlib.sha256(b"something else").hexdigest()
    have = hashlib.sha256(b"from a\n").hexdigest()
    with pytest.raises(SourceError, match=f"source m: checksum mismatch .*{wrong}.*{have}"):
        served("https://example.invalid/a/train.txt", wrong)
    bad = write_spec(tmp_path, "\n" + sources_toml({"url": "https://example.invalid/data", "format": "lines"}), name="d")
    assert run_cli(build_main, [str(bad), "--out", str(tmp_path / "out"), "--mirror", str(mirror)]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err and "data" in err
