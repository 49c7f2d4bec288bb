"""Hostile inputs to the `lm` commands (issue 14): an export pointed at a folder it must not
delete, a checkpoint with flipped bytes, metrics after a resume from an earlier checkpoint, a
vocabulary size outside what the text allows, and the model card of a Hugging Face export.

Each failure is one line on stderr with its documented exit code (1 failure, 2 usage) and no
traceback; nothing a user wrote is deleted."""
from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest

from tests.helpers import TINY, corpora, err_line, gl_lines, tiny_run
from lm.errors import DataError, run_cli
from lm.evaluate import main as eval_main
from lm.generate import main as gen_main
from lm.ship.export import main as export_main
from lm.tokenizer import train_tokenizer
from lm.train import main as train_main


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory)


# ---- 1. lm.ship.export --out --------------------------------------------------------------
def test_export_refuses_a_folder_it_did_not_write(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("x")
    assert run_cli(export_main, [str(run), "--format", "int8", "--out", str(mine)]) == 2
    line = err_line(capsys)
    assert str(mine) in line and "--force" in line
    assert (mine / "notes.txt").read_text() == "x" and not (mine / "export.json").exists()
    # an earlier export of ours is replaced without --force
    ours = tmp_path / "ours"
    assert run_cli(export_main, [str(run), "--format", "int8", "--out", str(ours)]) == 0
    assert run_cli(export_main, [str(run), "--format", "int8", "--out", str(ours), "--float-embeddings"]) == 0
    assert json.loads((ours / "export.json").read_text())["int8_embeddings"] is False
    # --force replaces anything else
    assert run_cli(export_main, [str(run), "--format", "int8", "--out", str(mine), "--force"]) == 0
    assert not (mine / "notes.txt").exists() and (mine / "export.json").is_file()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert run_cli(export_main, [str(run), "--format", "int8", "--out", str(a_file), "--force"]) == 2
    assert a_file.read_text() == "x"


def test_export_never_replaces_the_run_or_a_folder_holding_it(run: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    copy = shutil.copytree(run, tmp_path / "box" / "run")
    before = sorted(str(p.relative_to(copy)) for p in copy.rglob("*"))
    for out in (copy, copy.parent, copy / "checkpoints", copy / "best"):
        for force in ([], ["--force"]):
            assert run_cli(export_main, [str(copy), "--format", "int8", "--out", str(out), *force]) == 2, (out, force)
            assert "run" in err_line(capsys)
    assert sorted(str(p.relative_to(copy)) for p in copy.rglob("*")) == before
    # a folder holding another run is not replaced either, even with --force
    other = shutil.copytree(run, tmp_path / "other" / "run")
    assert run_cli(export_main, [str(copy), "--format", "int8", "--out", str(other.parent), "--force"]) == 2
    err_line(capsys)
    assert (other / "run.json").is_file()
    # the run still resumes: two more steps from its checkpoint
    assert train_main(["--out", str(copy), "--steps", "62", "--quiet"]) == 0
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == ["62"]


# ---- 2. checkpoints with flipped bytes ------------------------------------------------------
def _flip_largest(folder: Path) -> Path:
    """Overwrite bytes in the middle of the checkpoint's largest data file, keeping its size
    (0xFF bytes read as NaN in float32)."""
    target = max((p for p in (folder / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(target.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 64] = b"\xff" * 64
    target.write_bytes(bytes(data))
    return target


def test_flipped_bytes_in_a_checkpoint_stop_every_command(run: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    copy = shutil.copytree(run, tmp_path / "run")
    best = _flip_largest(copy / "best" / "60")
    last = _flip_largest(copy / "checkpoints" / "60")
    assert run_cli(eval_main, [str(copy), "--split", "test", "--json"]) == 1
    out = capsys.readouterr()
    assert "nan" not in out.out.lower()
    err = out.err.strip().splitlines()
    assert len(err) == 1 and best.name in err[0] and "sha256" in err[0], err
    assert run_cli(export_main, [str(copy), "--format", "int8", "--out", str(tmp_path / "e")]) == 1
    assert best.name in err_line(capsys) and not (tmp_path / "e").exists()
    assert run_cli(train_main, ["--out", str(copy), "--steps", "70", "--quiet"]) == 1
    line = err_line(capsys)
    assert last.name in line and "diverged" not in line
    assert run_cli(gen_main, [str(copy), "--prompt", "O", "--max-tokens", "3"]) == 1
    assert best.name in err_line(capsys)
    assert sorted(p.name for p in (copy / "checkpoints").iterdir()) == ["60"]


# ---- 3. metrics.jsonl after a resume from an earlier checkpoint -----------------------------
def test_resume_cuts_metrics_logged_after_the_checkpoint(run: Path, tmp_path: Path) -> None:
    copy = shutil.copytree(run, tmp_path / "run")
    # killed at step 66 with the checkpoint at 60: rows 61-66 were logged, then lost
    with open(copy / "metrics.jsonl", "a", encoding="utf-8") as f:
        for step in range(61, 67):
            f.write(json.dumps({"step": step, "loss": 9.0, "lost": True}) + "\n")
        f.write('{"step": 67, "lo')  # a line cut by the kill
    assert train_main(["--out", str(copy), "--steps", "70", "--eval-every", "5", "--log-every", "1", "--quiet"]) == 0
    rows = [json.loads(x) for x in (copy / "metrics.jsonl").read_text().splitlines()]
    assert not any(r.get("lost") for r in rows)
    for key in ("loss", "dev_loss"):
        steps = [r["step"] for r in rows if key in r]
        assert steps == sorted(set(steps)), (key, steps)
    assert [r["step"] for r in rows if "loss" in r][-10:] == list(range(61, 71))


# ---- 4. --vocab-size outside what the text allows -------------------------------------------
def test_vocab_size_errors_state_the_valid_range() -> None:
    lines = gl_lines("train", 20)
    with pytest.raises(DataError) as low:
        train_tokenizer(lines, 100)
    m = re.search(r"--vocab-size 100 is below the (\d+) pieces .*between (\d+) and (\d+)", str(low.value))
    assert m and m[1] == m[2], str(low.value)
    lo, hi = int(m[2]), int(m[3])
    assert "\n" not in str(low.value)
    with pytest.raises(DataError) as high:
        train_tokenizer(lines, 5000)
    m = re.search(r"--vocab-size 5000 is above the (\d+) pieces .*between (\d+) and (\d+)", str(high.value))
    assert m and (int(m[2]), int(m[3])) == (lo, hi) and int(m[1]) == hi, str(high.value)
    assert "smaller --vocab-size" in str(high.value)
    # the range is exact: both ends train, one past either end does not
    assert train_tokenizer(lines, lo).vocab_size == lo and train_tokenizer(lines, hi).vocab_size == hi
    for bad in (lo - 1, hi + 1):
        with pytest.raises(DataError):
            train_tokenizer(lines, bad)


def test_train_command_states_the_vocabulary_range(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
                                                   capsys: pytest.CaptureFixture) -> None:
    gl = str(corpora(tmp_path_factory)["gl"])
    code = run_cli(train_main, ["--corpus", gl, *TINY, "--steps", "5", "--vocab-size", "100",
                                "--out", str(tmp_path / "r")])
    line = err_line(capsys)
    assert code == 1 and re.search(r"--vocab-size 100 is below the \d+ pieces", line) and "larger" in line, line


# ---- 5. the model card of an hf export ------------------------------------------------------
def _front_matter(text: str) -> tuple[dict, str]:
    import yaml
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def test_hf_export_has_a_model_card_whose_snippet_runs(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "hf"
    assert export_main([str(run), "--format", "hf", "--out", str(out)]) == 0
    meta, body = _front_matter((out / "README.md").read_text(encoding="utf-8"))
    assert meta["language"] == ["gl"] and meta["datasets"] == ["gl-small"]
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert meta["license"] == "unknown"  # the test corpus's spec names no licence
    assert "scarce-lm" in meta["tags"]
    assert "not recorded" in body  # lm.train records no test figure
    code = re.search(r"```python\n(.*?)```", body, re.S)[1]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {})
    assert len(printed.getvalue().strip()) > len("A enfermidade")


def test_model_card_licence_and_recorded_figures(run: Path, tmp_path: Path) -> None:
    from lm.ship.model_card import hub_license, model_card

    assert hub_license("CC BY-NC-SA 3.0 (research and testing use only)") == {"license": "cc-by-nc-sa-3.0"}
    assert hub_license("Apache-2.0") == {"license": "apache-2.0"}
    assert hub_license("public domain") == {"license": "other", "license_name": "public-domain"}
    assert hub_license(None) == {"license": "unknown"}
    # a distilled student: its own figure (DONE.json), the baseline's and teacher's (report.json)
    corpus = tmp_path / "corpus" / "v1"
    corpus.mkdir(parents=True)
    (corpus / "spec.toml").write_text('name = "gl-ctg"\nlanguage = "gl"\nlicense = "CC BY-NC-SA 3.0 (research only)"\n')
    student = tmp_path / "distill" / "models" / "student-s0"
    student.mkdir(parents=True)
    (student / "DONE.json").write_text(json.dumps({"test_bits_per_char": 2.3617}))
    (tmp_path / "distill" / "report.json").write_text(json.dumps({"models": {
        "baseline": {"test_bits_per_char": 2.5031}, "teacher": {"test_bits_per_char": 2.2396},
        "ngram": {"test_bits_per_char": 2.0986}}}))
    info = {"path": str(student), "checkpoint": "best/250", "params": 771200,
            "corpus": {"name": "gl-ctg", "version": "v1", "path": str(corpus)}}
    from lm.loader import load_model
    cfg = load_model(run).cfg
    meta, body = _front_matter(model_card(info, cfg, "hf"))
    assert meta["license"] == "cc-by-nc-sa-3.0" and meta["language"] == ["gl"] and meta["datasets"] == ["gl-ctg"]
    metrics = meta["model-index"][0]["results"][0]["metrics"]
    assert metrics[0]["value"] == pytest.approx(2.3617)
    for figure in ("2.3617", "2.5031", "2.2396"):
        assert figure in body
    # the last checkpoint is not the one those figures describe
    _, body = _front_matter(model_card(info | {"checkpoint": "checkpoints/300"}, cfg, "hf"))
    assert "2.3617" not in body and "not recorded" in body


@pytest.mark.parametrize("flags, message", [
    (["--temperature", "nan"], "--temperature must be 0 (greedy) or in [0.001, 100], not nan"),
    (["--temperature", "1e-310"], "--temperature must be 0 (greedy) or in [0.001, 100], not 1e-310"),
    (["--seed", "-1"], "--seed must be at least 0, not -1"),
    (["--top-p", "0"], "--top-p must be in (0, 1], not 0.0"),
])
def test_generate_refuses_bad_values_in_one_line(run: Path, flags: list[str], message: str,
                                                 capsys: pytest.CaptureFixture) -> None:
    """Values that used to end in a traceback (issue 29, item 12) are usage errors, exit 2."""
    assert run_cli(gen_main, [str(run), "--prompt", "O", *flags]) == 2
    assert err_line(capsys) == f"error: {message}"
