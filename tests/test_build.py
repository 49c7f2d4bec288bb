"""The corpus build on real gl-ctg and Tiny Shakespeare text: accounting, splits, determinism."""
from __future__ import annotations

import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest

from pipelines.build import build, main as build_main
from pipelines.dedup import MinHasher, shingles
from pipelines.errors import run_cli
from pipelines.normalise import normalise_text
from pipelines.spec import load_spec

from conftest import (ROOT, SHAKESPEARE, SHARED, check_accounting, gl_lines, read_rejected,
                      read_split, tree_digest, write_spec)

SPLITS = ("train", "dev", "test")


@pytest.fixture(scope="module")
def gl_build(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("gl")
    return build(load_spec(ROOT / "corpora" / "gl-ctg.toml"), str(out), mirror=str(SHARED))


def test_gl_ctg_accounting_and_latest(gl_build: dict) -> None:
    version_dir = Path(gl_build["path"])
    stats = gl_build["stats"]
    check_accounting(stats, version_dir)
    assert (version_dir.parent / "LATEST").read_text().strip() == gl_build["version"]
    # Every line of the three files is accounted for.
    assert stats["input"] == sum(len(gl_lines(s)) for s in SPLITS)
    assert stats["kept"] > 0.99 * stats["input"]
    for name in SPLITS:
        assert stats["sources"][name]["input"] == len(gl_lines(name))
    manifest = (version_dir / "manifest.json").read_text()
    for row in ("7e9c8941a88d2aae", "e43246996f63c9e5", "69d98d55f1b41c24"):
        assert row in manifest
    assert "\n---\n# gl-ctg (" in (version_dir / "README.md").read_text()  # front matter, then the card


def test_gl_ctg_no_id_in_two_splits_and_source_splits_kept(gl_build: dict) -> None:
    version_dir = Path(gl_build["path"])
    ids = {s: {r["id"] for r in read_split(version_dir, s)} for s in SPLITS}
    assert not ids["train"] & ids["dev"] and not ids["train"] & ids["test"] and not ids["dev"] & ids["test"]
    test_text = {normalise_text(t) for t in gl_lines("test")}
    assert all(r["text"] in test_text for r in read_split(version_dir, "test"))
    # Reading order survives: train rows are in file order.
    poses = [r["pos"] for r in read_split(version_dir, "train")]
    assert poses == sorted(poses)


def test_gl_ctg_no_near_duplicates_across_splits(gl_build: dict) -> None:
    version_dir = Path(gl_build["path"])
    hasher = MinHasher(112, 1)
    train = np.stack([hasher.signature(shingles(r["text"], 5)) for r in read_split(version_dir, "train")])
    for r in read_split(version_dir, "test"):
        sig = hasher.signature(shingles(r["text"], 5))
        assert (train == sig).mean(axis=1).max() < 0.7, r["text"]


def test_every_split_loads_with_datasets(gl_build: dict, tmp_path: Path) -> None:
    version_dir = Path(gl_build["path"])
    for split in SPLITS:
        (ds,) = datasets.load_dataset("parquet", data_dir=str(version_dir / split), cache_dir=str(tmp_path / "hf")).values()
        assert len(ds) == gl_build["stats"]["splits"][split]
        assert ds.column_names[:6] == ["id", "text", "source", "doc", "pos", "lang"]
    # The whole snapshot loads too: datasets reads the shard names as train/validation/test.
    whole = datasets.load_dataset("parquet", data_dir=str(version_dir), cache_dir=str(tmp_path / "hf"))
    assert {k: len(v) for k, v in whole.items()} == {
        "train": gl_build["stats"]["splits"]["train"], "validation": gl_build["stats"]["splits"]["dev"],
        "test": gl_build["stats"]["splits"]["test"]}


def test_same_input_gives_identical_bytes_in_both_running_modes(gl_build: dict, tmp_path: Path) -> None:
    spec = load_spec(ROOT / "corpora" / "gl-ctg.toml")
    again = build(spec, str(tmp_path / "a"), mirror=str(SHARED))
    multi = build(spec, str(tmp_path / "b"), mirror=str(SHARED),
                  beam_args=["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    assert again["version"] == multi["version"] == gl_build["version"]
    reference = tree_digest(Path(gl_build["path"]))
    assert tree_digest(Path(again["path"])) == reference
    assert tree_digest(Path(multi["path"])) == reference


def test_rebuild_keeps_published_version(gl_build: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(Path(gl_build["path"]).parent, out / "gl-ctg")
    result = build(load_spec(ROOT / "corpora" / "gl-ctg.toml"), str(out), mirror=str(SHARED))
    assert result["version"] == gl_build["version"]
    assert not [p for p in (out / "gl-ctg").iterdir() if p.name.startswith(".staging")]


@pytest.mark.parametrize("near", ["drop", "keep"])
def test_planted_near_duplicate_lands_in_one_split(tmp_path: Path, near: str) -> None:
    test_lines = gl_lines("test", 60)
    original = test_lines[10]
    words = original.split()
    words[len(words) // 2] = words[len(words) // 2].upper() + "s"  # a one-word edit
    planted = " ".join(words)
    (tmp_path / "train.txt").write_text("\n".join(gl_lines("train", 150) + [planted]) + "\n", encoding="utf-8")
    (tmp_path / "test.txt").write_text("\n".join(test_lines) + "\n", encoding="utf-8")
    spec = write_spec(tmp_path, f"""
[[sources]]
path = "train.txt"
format = "lines"
split = "train"
[[sources]]
path = "test.txt"
format = "lines"
split = "test"
[split]
method = "source"
[dedup]
near = "{near}"
""")
    result = build(load_spec(spec), str(tmp_path / "out"))
    version_dir = Path(result["path"])
    check_accounting(result["stats"], version_dir)
    train = {r["text"] for r in read_split(version_dir, "train")}
    test = {r["text"] for r in read_split(version_dir, "test")}
    assert planted not in train and original in test
    if near == "keep":
        assert planted in test
    else:
        dup = [r for r in read_rejected(version_dir) if r["reason"] == "near_duplicate"]
        assert any(r["snippet"] == planted[:200] and r["source"] == "train" for r in dup)


def test_hash_split_is_stable_and_exact_duplicates_go_once(tmp_path: Path) -> None:
    lines = gl_lines("train", 300)
    (tmp_path / "a.txt").write_text("\n".join(lines + lines[:20]) + "\n", encoding="utf-8")
    spec = write_spec(tmp_path, '[[sources]]\npath = "a.txt"\nformat = "lines"\n[split]\nmethod = "hash"\ndev = 0.1\ntest = 0.1\n')
    result = build(load_spec(spec), str(tmp_path / "out"))
    version_dir = Path(result["path"])
    check_accounting(result["stats"], version_dir)
    assert result["stats"]["stages"]["exact_dedup"]["exact_duplicate"] >= 20
    split_of = {r["id"]: s for s in SPLITS for r in read_split(version_dir, s)}
    assert 10 < sum(1 for s in split_of.values() if s == "test") < 60
    # Growing the corpus never moves an existing sentence.
    (tmp_path / "a.txt").write_text("\n".join(lines + gl_lines("dev", 50)) + "\n", encoding="utf-8")
    grown = build(load_spec(spec), str(tmp_path / "out"))
    split_after = {r["id"]: s for s in SPLITS for r in read_split(Path(grown["path"]), s)}
    assert grown["version"] != result["version"]
    assert all(split_after[i] == s for i, s in split_of.items() if i in split_after)


def test_tinyshakespeare_tail_split_is_the_published_validation_text(tmp_path: Path, capsys) -> None:
    code = run_cli(build_main, [str(ROOT / "corpora" / "tinyshakespeare.toml"), "--out", str(tmp_path), "--mirror", str(SHARED)])
    assert code == 0
    assert "input" in capsys.readouterr().out
    version_dir = tmp_path / "tinyshakespeare" / (tmp_path / "tinyshakespeare" / "LATEST").read_text().strip()
    data = SHAKESPEARE.read_text(encoding="utf-8")
    n = len(data)
    join = lambda split: "\n\n".join(r["text"] for r in read_split(version_dir, split))
    assert join("test") == data[int(n * 0.9):].strip()
    assert join("dev") == data[int(n * 0.85):int(n * 0.9)].strip()
    assert join("train").startswith("First Citizen:\nBefore we proceed any further, hear me speak.")


def test_code_hash_covers_every_pipelines_source_file(tmp_path: Path, monkeypatch) -> None:
    """A change to any .py file under pipelines/, sub-folders too, is a new code hash (a new version)."""
    import pipelines
    from pipelines.snapshot import code_sha256

    assert len(code_sha256()) == 64
    (tmp_path / "sub").mkdir()
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "sub" / "stage.py").write_text("A = 1\n")
    monkeypatch.setattr(pipelines, "__file__", str(tmp_path / "__init__.py"))
    before = code_sha256()
    (tmp_path / "sub" / "stage.py").write_text("A = 2\n")
    after = code_sha256()
    assert after != before
    (tmp_path / "sub" / "notes.txt").write_text("not code")
    assert code_sha256() == after
