"""`lm.ship.export --force` never deletes a published corpus (issue "Nothing lost, nothing silent,
round two"): a folder that is, or holds, a corpus snapshot (OUT, OUT/NAME with LATEST and
HISTORY, a version folder with its manifest.json) is refused like a run folder: exit 2, one
line, not one file changed. A real run (two steps of the tiny preset on a small gl-ctg corpus)
is exported, so without the guard the export would go ahead and replace the folder."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lm.errors import run_cli
from lm.ship.export import main as export_main
from lm.train import main as train_main
from pipelines.build import build
from pipelines.spec import load_spec

from tests.helpers import TINY, err_line, gl_split_spec, tree_digest


@pytest.fixture(scope="module")
def corpus_and_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("export-guards")
    extra = '[langid]\naction = "off"\n[dedup]\nnear = "off"\n'
    out = base / "corpora"
    build(load_spec(gl_split_spec(base / "src", (200, 40, 40), extra, "glguard")), str(out))
    run = base / "run"
    assert train_main(["--corpus", str(out / "glguard"), "--steps", "2", "--eval-every", "2", "--out", str(run),
                       *TINY]) == 0
    return out, run


def test_force_refuses_a_folder_that_is_or_holds_a_corpus_snapshot(corpus_and_run, tmp_path: Path, capsys) -> None:
    out, run = corpus_and_run
    corpus = out / "glguard"
    version = corpus / (corpus / "LATEST").read_text().strip()
    loose = shutil.copytree(version, tmp_path / "kept" / "a-version")  # a version folder on its own
    for target in (version, corpus, out, loose.parent, loose):
        before = tree_digest(target)
        assert run_cli(export_main, [str(run), "--format", "int8", "--out", str(target), "--force"]) == 2, target
        line = err_line(capsys)
        assert str(target) in line and "snapshot" in line and "--force" in line, line
        assert tree_digest(target) == before, target
        assert not target.with_name(target.name + ".partial").exists()
    # a folder of something else is still replaced with --force
    other = tmp_path / "notes"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    assert run_cli(export_main, [str(run), "--format", "int8", "--out", str(other), "--force"]) == 0
    assert (other / "export.json").is_file() and not (other / "notes.txt").exists()
