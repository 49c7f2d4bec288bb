"""The cross-fitted judges (`lm.distill.judge`) on real gl-ctg sentences: each is the modified
Kneser-Ney character n-gram of its half of train alone, at the order dev chooses; it scores a text
exactly as `lm.ngram` does, refuses its own half by id, and a re-run reads it back."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.helpers import gl_lines
from lm.distill import judge as judge_module
from lm.distill.judge import LeakError, halves, score, train_judges
from lm.errors import DataError
from lm.ngram import KN, MAX_ORDER, CharNgram


@dataclass
class Snapshot:
    """What the judges read of `lm.corpus.Snapshot`: records by split, joined with the separator."""
    root: Path
    splits: dict[str, list[dict]] = field(default_factory=dict)
    name: str = "gl"
    version: str = "v1"
    separator: str = "\n"

    def records(self, split: str) -> list[dict]:
        return self.splits[split]

    def text(self, split: str) -> str:
        return self.separator.join(r["text"] for r in self.splits[split])


def workspace(run: Path) -> SimpleNamespace:
    splits = {s: [{"id": f"{s}-{i:04d}", "text": t} for i, t in enumerate(gl_lines(s, n))]
              for s, n in (("train", 400), ("dev", 150))}
    return SimpleNamespace(run=run, snapshot=Snapshot(run / "snap", splits), log=lambda msg: None,
                           settings=SimpleNamespace(seed=0, judge_real=100, keep_quantile=1.0))


def half_records(ws: SimpleNamespace, h: int) -> list[dict]:
    half_of = halves(ws)
    return [r for r in ws.snapshot.records("train") if half_of[r["id"]] == h]


def test_a_judge_is_the_kneser_ney_ngram_of_its_half_at_the_order_dev_chooses(tmp_path: Path) -> None:
    """Guards the judges' model: judge k's score of a text is `lm.ngram`'s bits per character of
    that text alone under a modified KN n-gram counted on half k only (not on all of train), at
    the order with the lowest bits per character on dev; its data record lists half k's ids."""
    ws = workspace(tmp_path)
    judges = train_judges(ws)
    dev = ws.snapshot.text("dev")
    whole = CharNgram(ws.snapshot.text("train"), MAX_ORDER, KN)
    for j in judges:
        own, other = half_records(ws, j.half), half_records(ws, 1 - j.half)
        ref = CharNgram("\n".join(r["text"] for r in own), j.model.max_order, KN)
        by_order = ref.bits_per_char(dev)
        assert j.info["dev_bits_per_char_by_order"] == pytest.approx(by_order, rel=1e-12)
        assert j.order == int(np.argmin(by_order)) + 1 and j.order < j.model.max_order  # not cut off by the range
        assert j.info["method"] == KN and j.info["data"]["records"] == sorted(r["id"] for r in own)
        assert json.loads((tmp_path / "judge" / f"{j.name}.json").read_text()) == j.info
        texts = [r["text"] for r in other[:20]] + ["Unha frase que ningún viu."]
        got = score(ws, j, texts, [r["id"] for r in other[:20]])
        assert got == pytest.approx([ref.bits_per_char_at(t, j.order) for t in texts], rel=1e-12)
        assert not np.allclose(got, [whole.bits_per_char_at(t, j.order) for t in texts])  # the half, not all
        assert np.isnan(score(ws, j, [""])[0])  # nothing to score
        with pytest.raises(LeakError, match=f"{j.name} trained on 2"):
            score(ws, j, ["x", "y"], [r["id"] for r in own[:2]])
    assert [j.name for j in judges] == ["judge-a", "judge-b"] and [j.half for j in judges] == [0, 1]


def test_a_rerun_reads_the_judges_back_and_refuses_other_records(tmp_path: Path, monkeypatch) -> None:
    """Guards `RUN/judge/NAME.json`: a re-run counts the same records again at the stored order
    without choosing it anew, and scores the same; a record listing other ids stops the run."""
    ws = workspace(tmp_path)
    first = train_judges(ws)
    texts = [r["text"] for r in half_records(ws, 1)[:10]]
    monkeypatch.setattr(judge_module, "dev_curve", lambda *a: pytest.fail("the order was chosen again"))
    again = train_judges(ws)
    assert [(j.order, j.info) for j in again] == [(j.order, j.info) for j in first]
    assert np.array_equal(score(ws, again[0], texts), score(ws, first[0], texts))
    path = tmp_path / "judge" / "judge-b.json"
    info = json.loads(path.read_text())
    info["data"]["records"] = info["data"]["records"][1:]
    path.write_text(json.dumps(info))
    with pytest.raises(DataError, match="counted on other records than half B"):
        train_judges(ws)
