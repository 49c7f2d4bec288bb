"""The character n-gram anchor on real gl-ctg text: a proper distribution for every history, the
order chosen on dev, and test scored at that order."""
from __future__ import annotations

import math

import numpy as np
import pytest

from tests.helpers import corpora, gl_lines
from lm.errors import run_cli
from lm.ngram import UNSEEN, CharNgram, anchor, main as ngram_main


@pytest.fixture(scope="module")
def model() -> CharNgram:
    return CharNgram("\n".join(gl_lines("train", 1500)), max_order=6)


def test_probabilities_sum_to_one_over_the_vocabulary(model: CharNgram) -> None:
    text = "\n".join(gl_lines("dev", 200))
    rng = np.random.default_rng(0)
    for i in rng.integers(0, len(text), 25).tolist() + [0, 1]:  # sampled histories, and the first characters
        history = text[max(0, i - 5):i]
        sums = np.sum([model.probs(history, c) for c in model.vocab], axis=0)
        assert np.allclose(sums, 1.0, atol=1e-9), (history, sums)
    # a character never seen in train gets the mass of the one unseen symbol, not zero
    assert model.probs("de", "\u4e2d") == model.probs("de", UNSEEN) and model.probs("de", "\u4e2d")[-1] > 0


def test_higher_orders_fit_real_text_better_up_to_a_point(model: CharNgram) -> None:
    bpc = model.bits_per_char("\n".join(gl_lines("dev", 300)))
    assert bpc[0] < math.log2(len(model.vocab))  # order 1 beats uniform
    assert bpc[3] < bpc[1] < bpc[0]              # context helps


def test_anchor_chooses_the_order_on_dev(tmp_path_factory: pytest.TempPathFactory, capsys) -> None:
    gl = str(corpora(tmp_path_factory)["gl"])
    r = anchor(gl, max_order=6)
    dev = r["dev_bits_per_char_by_order"]
    assert r["order"] == int(np.argmin(dev)) + 1 and r["dev_bits_per_char"] == pytest.approx(dev[r["order"] - 1], abs=1e-4)
    assert 0 < r["test_bits_per_char"] < 8
    assert run_cli(ngram_main, ["--corpus", gl, "--max-order", "6"]) == 0
    assert f"order {r['order']} (chosen on dev)" in capsys.readouterr().out
    assert run_cli(ngram_main, ["--corpus", gl, "--max-order", "0"]) == 2
