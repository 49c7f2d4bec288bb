"""Corpus specs: the shipped ones load; every mistake is one line naming the key, exit code 2."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.build import main as build_main
from pipelines.errors import run_cli
from pipelines.spec import load_spec

from tests.helpers import ROOT, write_spec

GOOD_SOURCE = '[[sources]]\npath = "a.txt"\nformat = "lines"\n'


def test_shipped_specs_load() -> None:
    gl = load_spec(ROOT / "corpora" / "gl-ctg.toml")
    assert gl.language == "gl" and gl.split.method == "source"
    assert [s.split for s in gl.sources] == ["train", "dev", "test"]
    assert all(s.url and s.sha256 and "574219fccc24b437f5f3b62f2a7e75be4dcd0214" in s.url for s in gl.sources)
    ts = load_spec(ROOT / "corpora" / "tinyshakespeare.toml")
    assert ts.split.method == "tail" and (ts.split.dev, ts.split.test) == (0.05, 0.1)
    assert ts.sources[0].sha256 == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    nano = load_spec(ROOT / "corpora" / "tinyshakespeare-nanogpt.toml")  # nanoGPT's 90/10, no dev
    assert nano.split.method == "tail" and (nano.split.dev, nano.split.test) == (0.0, 0.1)
    assert nano.sources[0].sha256 == ts.sources[0].sha256 and not nano.augment


@pytest.mark.parametrize("body, key, problem", [
    ("", "sources", "is required"),
    ('[[sources]]\npath = "a.txt"\nurl = "https://x/a.txt"\nformat = "lines"\n', "sources[0]", "exactly one of path, url, hf"),
    ('[[sources]]\npath = "a.txt"\nformat = "csv"\n', "sources[0].format", "must be one of"),
    ('[[sources]]\npath = "a.txt"\n', "sources[0].format", "is required"),
    ('[[sources]]\nurl = "ftp://x/a.txt"\nformat = "lines"\n', "sources[0].url", "https://"),
    ('[[sources]]\npath = "a.txt"\nformat = "lines"\nsha256 = "abc"\n', "sources[0].sha256", "64 lowercase hex"),
    ('[[sources]]\npath = "a.txt"\nformat = "lines"\nfield = "x"\n', "sources[0].field", "only for jsonl"),
    ('[[sources]]\npath = "a.txt"\nformat = "lines"\nsplitt = "train"\n', "sources[0].splitt", "unknown key"),
    (GOOD_SOURCE + '[split]\nmethod = "random"\n', "split.method", "must be one of"),
    (GOOD_SOURCE + '[split]\nmethod = "hash"\ndev = 0.6\ntest = 0.5\n', "split.test", "below 1"),
    (GOOD_SOURCE + '[split]\nmethod = "source"\n', "sources[0].split", "is required when"),
    (GOOD_SOURCE + '[filters]\nmin_chars = "ten"\n', "filters.min_chars", "must be int"),
    (GOOD_SOURCE + '[dedup]\nnum_perm = 112\nbands = 15\n', "dedup.bands", "divide"),
    (GOOD_SOURCE + '[langid]\naction = "drop"\n', "langid.action", "must be one of"),
    (GOOD_SOURCE + "[split\n", "not valid TOML", ""),
])
def test_spec_errors_name_the_key(tmp_path: Path, capsys: pytest.CaptureFixture, body: str, key: str, problem: str) -> None:
    spec = write_spec(tmp_path, body)
    code = run_cli(build_main, [str(spec), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert str(spec) in err and key in err and problem in err
    assert not (tmp_path / "out").exists()


def test_bad_language_code_and_missing_spec(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec = tmp_path / "x.toml"
    spec.write_text('name = "x"\nlanguage = "Galician"\n' + GOOD_SOURCE)
    assert run_cli(build_main, [str(spec), "--out", str(tmp_path)]) == 2
    assert "language" in capsys.readouterr().err
    assert run_cli(build_main, [str(tmp_path / "nope.toml"), "--out", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err


def test_unknown_option_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec = write_spec(tmp_path, GOOD_SOURCE)
    assert run_cli(build_main, [str(spec), "--out", str(tmp_path), "--mirrror", "x"]) == 2
    assert "--mirrror" in capsys.readouterr().err


@pytest.mark.parametrize("table, key, value", [
    ("filters", "max_symbol_ratio", "-1.0"), ("filters", "min_alpha_ratio", "5.0"), ("filters", "max_digit_ratio", "nan"),
    ("filters", "min_chars", "-1"), ("filters", "max_chars", "-5"), ("filters", "min_words", "-1"),
    ("filters", "max_record_bytes", "-1"), ("filters", "repetition_min_words", "-1"),
    ("filters", "max_chars", "5"),  # below min_chars (10)
    ("filters", "top_ngram_fraction", "[0.2, 1.5, 0.1]"), ("filters", "dup_ngram_fraction", "[0.1, 0.1, 0.1, 0.1, 0.1, nan]"),
    ("dedup", "num_perm", "1000000000000"), ("dedup", "num_perm", "8"), ("dedup", "bands", "0"),
    ("dedup", "bands", "5000"), ("dedup", "ngram", "0"), ("dedup", "ngram", "1000"), ("dedup", "seed", "-1"),
    ("dedup", "seed", "4294967296"), ("dedup", "threshold", "nan"), ("output", "rows_per_shard", "-1"),
    ("output", "rows_per_shard", "1000000000000"), ("split", "dev", "inf"), ("langid", "min_score", "-0.5"),
    ("sources", "max_bytes", "0"), ("sources", "max_bytes", "-1"),
])
def test_out_of_range_numbers_are_spec_errors(tmp_path: Path, capsys: pytest.CaptureFixture, table: str, key: str,
                                              value: str) -> None:
    body = (GOOD_SOURCE + f"{key} = {value}\n" if table == "sources" else GOOD_SOURCE + f"[{table}]\n{key} = {value}\n")
    spec = write_spec(tmp_path, body)
    assert run_cli(build_main, [str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    where = "sources[0]" if table == "sources" else table
    assert len(err.splitlines()) == 1 and str(spec) in err and f"{where}.{key}" in err, err
    assert not (tmp_path / "out").exists()
