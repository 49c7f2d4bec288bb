"""The n-gram anchor's figures are honest evidence: its order is chosen on dev (never on test),
and it counts train text only (dev is scored by a model that never saw it), both in `fit` and in
`anchor` over a real snapshot."""
from __future__ import annotations

import numpy as np
import pytest

from lm.corpus import open_snapshot
from lm.ngram import CharNgram, anchor, fit
from tests.helpers import SENTINEL, corpora, gl_lines

TRAIN = "\n".join(gl_lines("train", 300))
DEV = "\n".join(gl_lines("dev", 60))
TEST = "\n".join(gl_lines("test", 60))


def shuffled(text: str, seed: int) -> str:
    """The characters of `text` in a random order: no context helps, so order 1 is best on it."""
    return "".join(np.random.default_rng(seed).permutation(list(text)))


def best_order(model: CharNgram, text: str) -> int:
    return int(np.argmin(model.bits_per_char(text))) + 1


@pytest.mark.parametrize("dev_kind", ["real dev", "shuffled dev"])
def test_fit_chooses_the_order_on_dev_whatever_test_prefers(dev_kind: str) -> None:
    # one of dev and test is real text (a middle order is best), the other its characters
    # shuffled (order 1 is best): the two disagree, and the choice must follow dev
    if dev_kind == "real dev":
        dev, test = DEV, shuffled(TEST, 1)
    else:
        dev, test = shuffled(DEV, 2), TEST
    r = fit(TRAIN, dev, test, max_order=6)
    tried = len(r["dev_bits_per_char_by_order"])
    alone = CharNgram(TRAIN, tried)
    by_dev, by_test = alone.bits_per_char(dev), alone.bits_per_char(test)
    assert best_order(alone, dev) != best_order(alone, test)  # the planted disagreement is there
    assert r["order"] == best_order(alone, dev), (r["order"], by_dev, by_test)
    assert r["dev_bits_per_char_by_order"] == pytest.approx(by_dev, abs=1e-12)
    assert r["dev_bits_per_char"] == pytest.approx(by_dev[r["order"] - 1], abs=1e-12)
    # test is scored once, at dev's order: not its own best
    assert r["test_bits_per_char"] == pytest.approx(by_test[r["order"] - 1], abs=1e-12)
    assert r["test_bits_per_char"] > min(by_test) + 0.01


def test_fit_counts_train_only() -> None:
    r = fit(TRAIN, DEV, TEST, max_order=6)
    assert r["train_chars"] == len(TRAIN)
    alone = CharNgram(TRAIN, len(r["dev_bits_per_char_by_order"]))
    # dev scored by a model fitted on train alone, to the last digit
    assert r["dev_bits_per_char_by_order"] == pytest.approx(alone.bits_per_char(DEV), abs=1e-12)
    assert r["test_bits_per_char"] == pytest.approx(alone.bits_per_char_at(TEST, r["order"]), abs=1e-12)
    # the words of dev that train never holds: a model that counted dev would find them cheap
    words = sorted({w for w in DEV.split() if len(w) > 6 and w not in TRAIN})
    assert len(words) > 20
    novel = "\n".join(words)
    with_novel = fit(TRAIN, DEV + "\n" + novel, TEST, max_order=6)
    assert with_novel["train_chars"] == len(TRAIN)
    again = CharNgram(TRAIN, len(with_novel["dev_bits_per_char_by_order"]))
    assert with_novel["dev_bits_per_char_by_order"] == pytest.approx(again.bits_per_char(DEV + "\n" + novel), abs=1e-12)
    # unseen words cost more per character than dev as a whole, at the chosen order
    order = with_novel["order"]
    assert again.bits_per_char_at(novel, order) > with_novel["dev_bits_per_char"] + 0.5


def test_anchor_on_a_snapshot_chooses_on_dev_and_counts_train_only(tmp_path_factory: pytest.TempPathFactory) -> None:
    gl = corpora(tmp_path_factory)["gl"]
    snap = open_snapshot(str(gl))
    train, dev, test = (snap.text(s) for s in ("train", "dev", "test"))
    assert SENTINEL in dev and SENTINEL in test and SENTINEL not in train  # held-out only words
    r = anchor(str(gl), max_order=4)
    assert r["train_chars"] == len(train)
    alone = CharNgram(train, len(r["dev_bits_per_char_by_order"]))
    by_dev, by_test = alone.bits_per_char(dev), alone.bits_per_char(test)
    assert r["dev_bits_per_char_by_order"] == pytest.approx(by_dev, abs=1e-12)
    assert r["order"] == int(np.argmin(by_dev)) + 1
    assert r["dev_bits_per_char"] == pytest.approx(by_dev[r["order"] - 1], abs=1e-12)
    assert r["test_bits_per_char"] == pytest.approx(by_test[r["order"] - 1], abs=1e-12)
    # the sentinel, in a third of dev's lines, is a string train never held: it stays expensive
    assert alone.bits_per_char_at(SENTINEL, r["order"]) > r["dev_bits_per_char"] + 1.0
