"""Command-line options no other test runs: `pipelines.build --json`, `pipelines.augment
--version --seed --json` and `pipelines.refresh --max-shrink`, each on a small gl-ctg corpus."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from augment.base import record_seed
from pipelines.augment import main as augment_main
from pipelines.build import build, main as build_main
from pipelines.errors import run_cli
from pipelines.spec import load_spec

from tests.helpers import gl_split_spec

NAME = "glopts"
NOISE = '[augment]\nseed = 3\n[[augment.steps]]\naugmenter = "noise"\nops = ["typo"]\nrate = 0.1\n'


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """OUT/glopts with two versions: the first built with build(), the second (more train
    lines, LATEST) with `pipelines.build --json`, whose exit code and stdout are kept."""
    folder = tmp_path_factory.mktemp("opts")
    out = folder / "out"
    first = build(load_spec(gl_split_spec(folder / "v1", (60, 20, 20), NOISE, NAME)), str(out))
    spec = gl_split_spec(folder / "v2", (80, 20, 20), NOISE, NAME)
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = run_cli(build_main, [str(spec), "--out", str(out), "--json"])
    return {"out": out, "first": first["version"], "code": code, "stdout": stdout.getvalue()}


def test_build_json_prints_the_summary_as_json(two_versions: dict) -> None:
    assert two_versions["code"] == 0
    result = json.loads(two_versions["stdout"])
    corpus = two_versions["out"] / NAME
    assert result["name"] == NAME and result["version"] == (corpus / "LATEST").read_text().strip() != two_versions["first"]
    assert Path(result["path"]) == corpus / result["version"]
    assert result["stats"] == json.loads((corpus / result["version"] / "stats.json").read_text())
    assert result["stats"]["splits"]["train"] > 60 and result["empty"] is False


def test_augment_version_seed_json(two_versions: dict, tmp_path: Path, capsys) -> None:
    """--version augments that version, not LATEST's; --seed replaces [augment] seed; --json prints the stats."""
    corpus = tmp_path / NAME
    shutil.copytree(two_versions["out"] / NAME, corpus)
    first, last = two_versions["first"], (corpus / "LATEST").read_text().strip()
    code = run_cli(augment_main, [str(corpus), "--version", first, "--seed", "7", "--json"])
    stats = json.loads(capsys.readouterr().out)
    assert code == 0 and stats["seed"] == 7
    assert stats == json.loads((corpus / first / "augmented" / "stats.json").read_text())
    assert not (corpus / last / "augmented").exists()
    rows = pq.read_table(corpus / first / "augmented" / "train").to_pylist()
    assert rows and all(r["seed"] == record_seed(r["parent_id"], "noise", 0, 7) for r in rows)
    assert stats["total"]["inputs"] == json.loads((corpus / first / "stats.json").read_text())["splits"]["train"]


def test_refresh_max_shrink(two_versions: dict, tmp_path: Path, capsys) -> None:
    """Train shrinks 80 -> 50 lines (37%): --max-shrink 0.3 refuses it and says its limit, 0.5 publishes."""
    from pipelines.refresh import main as refresh_main

    out = tmp_path / "out"
    shutil.copytree(two_versions["out"] / NAME, out / NAME)
    before = (out / NAME / "LATEST").read_text().strip()
    spec = gl_split_spec(tmp_path / "shrunk", (50, 20, 20), NOISE, NAME)
    assert run_cli(refresh_main, [str(spec), "--out", str(out), "--max-shrink", "0.3"]) == 1
    err = capsys.readouterr().err
    assert "shrink: split train would lose" in err and "over the limit of 30% (--max-shrink)" in err
    assert (out / NAME / "LATEST").read_text().strip() == before
    assert run_cli(refresh_main, [str(spec), "--out", str(out), "--max-shrink", "0.5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["status"] == "published" and result["previous"] == before and result["removed"] >= 25
    assert (out / NAME / "LATEST").read_text().strip() == result["version"]
