"""Nothing lost, nothing silent, round two (the pipelines' part), on small corpora of real gl-ctg text:

* `pipelines.refresh A B --then CMD` where A publishes and B fails: A's new version still gets its
  `--then` (run once, exit 1 for B); a `--then` that fails is pending, and the next refresh runs it
  even though A is unchanged, then never again;
* `pipelines.augment OUT/a --version ../b/V` is refused (exit 2, one line): it would write into
  corpus b while holding only a's lock;
* `language = "glg"` (ISO 639-3) is identified as Galician (`gl` to the backend); a code the
  backend does not know is said in one `warning:` line, or refused when `[langid]` asks to reject.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from pipelines.augment import main as augment_main
from pipelines.build import build, main as build_main
from pipelines.errors import run_cli
from pipelines.refresh import main as refresh_main
from pipelines.spec import load_spec

from tests.helpers import SHAKESPEARE, err_line, gl_lines, read_rejected, read_split, sources_toml, tree_digest, write_spec

FAST = '[split]\nmethod = "hash"\ndev = 0.1\ntest = 0.1\n[langid]\naction = "off"\n[dedup]\nnear = "off"\n'


def lines_spec(folder: Path, name: str, lines: list[str], extra: str = FAST, language: str = "gl") -> Path:
    """A spec `name` over one lines source `name.txt` holding `lines`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    spec = write_spec(folder, sources_toml({"path": f"{name}.txt", "format": "lines"}) + extra, name=name)
    spec.write_text(spec.read_text(encoding="utf-8").replace('language = "gl"', f'language = "{language}"', 1),
                    encoding="utf-8")
    return spec


# ---- 1. --then is never lost ------------------------------------------------------------------


def then_script(folder: Path) -> tuple[str, Path, Path]:
    """A --then command appending a line to `log`; it exits 3 (having logged `failed`) while
    `fail` exists."""
    log, fail = folder / "then.log", folder / "fail"
    script = folder / "then.py"
    script.write_text("import pathlib, sys\n"
                      f"log, fail = pathlib.Path({str(log)!r}), pathlib.Path({str(fail)!r})\n"
                      "with log.open('a') as f:\n"
                      "    f.write('failed\\n' if fail.exists() else 'ran\\n')\n"
                      "sys.exit(3 if fail.exists() else 0)\n", encoding="utf-8")
    return f"{sys.executable} {script}", log, fail


def refresh(specs: list[Path], out: Path, then: str, capsys) -> tuple[int, list[dict], str]:
    code = run_cli(refresh_main, [*map(str, specs), "--out", str(out), "--json", "--then", then])
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")], captured.err


def test_then_runs_for_a_published_corpus_when_another_spec_fails(tmp_path: Path, capsys) -> None:
    then, log, _ = then_script(tmp_path)
    good = lines_spec(tmp_path, "good", gl_lines("train", 60))
    bad = lines_spec(tmp_path, "bad", gl_lines("train", 60)[30:])
    (tmp_path / "bad.txt").unlink()  # its source is gone: the refresh of `bad` fails
    out = tmp_path / "out"
    code, results, err = refresh([good, bad], out, then, capsys)
    assert code == 1 and "bad" in err, err
    assert [r["status"] for r in results] == ["published"] and (out / "good" / "LATEST").is_file()
    assert log.read_text() == "ran\n"  # good's new version got its --then, despite bad
    # The next run finds good unchanged: its version already had its --then, which does not run again.
    code, results, err = refresh([good], out, then, capsys)
    assert code == 0 and [r["status"] for r in results] == ["unchanged"], err
    assert log.read_text() == "ran\n"


def test_a_failed_then_is_pending_and_runs_on_the_next_refresh(tmp_path: Path, capsys) -> None:
    then, log, fail = then_script(tmp_path)
    spec = lines_spec(tmp_path, "good", gl_lines("train", 60))
    out = tmp_path / "out"
    fail.touch()
    code, results, err = refresh([spec], out, then, capsys)
    assert code == 1 and "--then command exited 3" in err and results[0]["status"] == "published", err
    assert log.read_text() == "failed\n"
    fail.unlink()
    code, results, err = refresh([spec], out, then, capsys)  # unchanged, but its --then is owed
    assert code == 0 and results[0]["status"] == "unchanged", err
    assert log.read_text() == "failed\nran\n"
    code, results, err = refresh([spec], out, then, capsys)  # paid: nothing runs now
    assert code == 0 and results[0]["status"] == "unchanged", err
    assert log.read_text() == "failed\nran\n"
    assert not [p.name for p in (out / "good").iterdir() if "then" in p.name]  # nothing left behind


# ---- 2. augment --version names a version of the corpus given ---------------------------------


def test_augment_refuses_a_version_of_another_corpus(tmp_path: Path, capsys) -> None:
    augment = '[augment]\nseed = 5\n[[augment.steps]]\naugmenter = "noise"\nops = ["swap"]\nrate = 0.1\n'
    out = tmp_path / "out"
    for name, lines in (("a", gl_lines("train", 60)), ("b", gl_lines("train", 120)[60:])):
        build(load_spec(lines_spec(tmp_path, name, lines, FAST + augment)), str(out))
    b_version = (out / "b" / "LATEST").read_text().strip()
    before = tree_digest(out)
    for version in (f"../b/{b_version}", str(out / "b" / b_version)):
        assert run_cli(augment_main, [str(out / "a"), "--version", version]) == 2, version
        line = err_line(capsys)
        assert "--version" in line and str(out / "a") in line, line
    assert tree_digest(out) == before and not (out / "b" / b_version / "augmented").exists()


# ---- 3. language codes the identifier knows, and ones it does not -----------------------------


def test_iso_639_3_language_is_identified(tmp_path: Path) -> None:
    english = [p.replace("\n", " ") for p in SHAKESPEARE.read_text(encoding="utf-8").split("\n\n")
               if len(p) > 80][:20]
    lines = gl_lines("train", 80) + english
    extra = FAST.replace('action = "off"', 'action = "reject"')
    result = build(load_spec(lines_spec(tmp_path, "glg3", lines, extra, language="glg")), str(tmp_path / "out"))
    vdir = Path(result["path"])
    kept = [r for s in ("train", "dev", "test") for r in read_split(vdir, s)]
    wrong = [r for r in read_rejected(vdir) if r.get("reason") == "wrong_language"]
    assert len(wrong) >= 15, len(wrong)  # the English lines, no longer let through as score 1.0
    assert any(r["lang_score"] < 1.0 for r in kept) and all(r["lang"] == "glg" for r in kept)
    # Galician's confusables (Portuguese, Spanish) are its defaults under either code
    assert result["stats"] and load_spec(lines_spec(tmp_path / "c", "c", lines, language="glg")).langid.confusable \
        == load_spec(lines_spec(tmp_path / "d", "d", lines, language="gl")).langid.confusable == ("pt", "es")


def test_unknown_language_code_is_said_or_refused(tmp_path: Path, capsys) -> None:
    spec = lines_spec(tmp_path, "xxcorpus", gl_lines("train", 40), FAST.replace('[langid]\naction = "off"\n', ""),
                      language="xx")
    assert run_cli(build_main, [str(spec), "--out", str(tmp_path / "out")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:") and "'xx'" in line]
    assert len(warnings) == 1 and "language identification is off" in warnings[0], warnings
    # asked explicitly to reject other languages, an unknown code is a spec error before any work
    spec = lines_spec(tmp_path / "strict", "xxstrict", gl_lines("train", 40),
                      FAST.replace('action = "off"', 'action = "reject"'), language="xx")
    assert run_cli(build_main, [str(spec), "--out", str(tmp_path / "out2")]) == 2
    line = err_line(capsys)
    assert "'xx'" in line and "langid" in line, line
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize("code, expected", [("glg", "gl"), ("por", "pt"), ("eng", "en"), ("gl", "gl"),
                                            ("ast", None), ("xx", None)])
def test_backend_code(code: str, expected: str | None) -> None:
    from pipelines.langid import backend_language
    assert backend_language(code) == expected
