"""Interpolated modified Kneser-Ney in `lm.ngram`, on real gl-ctg text: proper distributions for
both methods, the formulae of Chen & Goodman (against a plain transcription), better than
Witten-Bell on held-out text, the order chosen on dev within a range whose top it is not, and
nothing but train text counted."""
from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest

import lm.ngram as ngram
from lm.errors import run_cli
from lm.ngram import KN, UNSEEN, WB, CharNgram, discounts, fit
from tests.helpers import corpora, gl_lines

TRAIN = "\n".join(gl_lines("train", 300))
DEV = "\n".join(gl_lines("dev", 60))
TEST = "\n".join(gl_lines("test", 60))


@pytest.fixture(scope="module", params=[KN, WB])
def model(request: pytest.FixtureRequest) -> CharNgram:
    return CharNgram(TRAIN, max_order=7, method=request.param)


def test_probabilities_sum_to_one_for_every_order_and_history(model: CharNgram) -> None:
    seen, unseen = TRAIN[1000:1006], "\u4e2dzq\u4e2dxw"
    for history in ("", "d", "de", seen, unseen, DEV[200:206], "a\u4e2d de", TRAIN[-6:]):
        table = np.array([model.probs(history, c) for c in model.vocab])  # vocabulary x order
        assert table.shape == (len(model.vocab), 7) and (table > 0).all()
        assert np.allclose(table.sum(axis=0), 1.0, atol=1e-9, rtol=0), (model.method, history, table.sum(axis=0))


def reference_kn(train: str, order: int, history: str, char: str) -> float:
    """Chen & Goodman's interpolated modified Kneser-Ney written out with dicts, one query at a time."""
    char = char if char in train else UNSEEN
    top = min(order, len(history) + 1)  # a short history: the highest order it allows
    p = 1.0 / len(set(train) | {UNSEEN})
    for k in range(1, top + 1):
        raw = Counter(train[i:i + k] for i in range(len(train) - k + 1))
        if k < top:  # continuation count: distinct characters seen before the k-gram
            raw = Counter(g[1:] for g in {train[i:i + k + 1] for i in range(len(train) - k)})
        n = Counter(raw.values())  # count-of-counts
        y = n[1] / (n[1] + 2 * n[2])
        d = {0: 0.0, 1: 1 - 2 * y * n[2] / n[1], 2: 2 - 3 * y * n[3] / n[2], 3: 3 - 4 * y * n[4] / n[3]}
        h = history[len(history) - k + 1:] if k > 1 else ""
        after = defaultdict(int, {g[-1]: v for g, v in raw.items() if g[:-1] == h})
        if sum(after.values()):
            gamma = sum(d[min(v, 3)] for v in after.values())
            p = (after[char] - d[min(after[char], 3)] + gamma * p) / sum(after.values())
    return p


def test_kneser_ney_is_chen_and_goodmans_formulae() -> None:
    # count-of-counts n1..n4 = 3, 2, 1, 1: Y = 3/7, D1 = 3/7, D2 = 2 - 9/14, D3+ = 3 - 12/7
    assert np.allclose(discounts(np.array([1, 1, 1, 2, 2, 3, 4, 9])), [0, 3 / 7, 19 / 14, 9 / 7])
    assert np.allclose(discounts(np.array([1, 1, 5])), [0, 1, 1, 1])  # n2 = 0: Y, within each count
    train = TRAIN[:4000]
    model = CharNgram(train, max_order=4)
    for history, char in [("de ", "c"), ("que", " "), ("qu", "e"), ("", "a"), ("x\u4e2d", "a"), ("ção", "\u4e2d"),
                          (train[:3], train[3]), ("zzz", "o")]:
        got = model.probs(history, char)
        want = [reference_kn(train, k, history, char) for k in range(1, 5)]
        assert np.allclose(got, want, atol=1e-12, rtol=0), (history, char, got, want)


def test_kneser_ney_beats_witten_bell_on_held_out_text() -> None:
    train, dev, test = ("\n".join(gl_lines(s, n)) for s, n in (("train", 1200), ("dev", 300), ("test", 300)))
    kn, wb = fit(train, dev, test, method=KN), fit(train, dev, test, method=WB)
    assert kn["method"] == KN and wb["method"] == WB and "Kneser-Ney" in kn["model"]
    # each at its own order chosen on dev; modified KN's edge is large on real text
    assert kn["test_bits_per_char"] < wb["test_bits_per_char"] - 0.1, (kn, wb)
    assert kn["dev_bits_per_char"] < wb["dev_bits_per_char"] - 0.1


def test_the_order_is_chosen_on_dev_and_test_scored_once_there() -> None:
    r = fit(TRAIN, DEV, TEST, max_order=6)
    dev = r["dev_bits_per_char_by_order"]
    assert r["order"] == int(np.argmin(dev)) + 1 and r["dev_bits_per_char"] == dev[r["order"] - 1]
    full = CharNgram(TRAIN, len(dev))
    assert r["test_bits_per_char"] == pytest.approx(full.bits_per_char(TEST)[r["order"] - 1], abs=1e-12)
    # planted: dev is the train characters shuffled (order 1 is best), test repeats train (a high
    # order is best): the choice must follow dev
    shuffled = "".join(np.random.default_rng(0).permutation(list(TRAIN[:3000])))
    r = fit(TRAIN, shuffled, TRAIN[5000:8000], max_order=6)
    by_test = full.bits_per_char(TRAIN[5000:8000])
    assert r["order"] == int(np.argmin(r["dev_bits_per_char_by_order"])) + 1 < int(np.argmin(by_test)) + 1
    assert r["test_bits_per_char"] == pytest.approx(by_test[r["order"] - 1], abs=1e-12)


def test_the_chosen_order_is_below_the_top_of_the_range_tried() -> None:
    r = fit(TRAIN, DEV, TEST, max_order=2)  # on this text order 2 is far from best: the range widens
    tried = len(r["dev_bits_per_char_by_order"])
    assert tried > 2 and (tried - 2) % ngram.WIDEN == 0 and r["order"] < tried
    assert len(fit(TRAIN, DEV, TEST, max_order=2, cap=3)["dev_bits_per_char_by_order"]) == 3  # the cap holds


def test_the_model_never_counts_dev_or_test(tmp_path_factory: pytest.TempPathFactory, monkeypatch, capsys) -> None:
    gl = corpora(tmp_path_factory)["gl"]
    built: list[tuple[str, CharNgram]] = []

    class Recording(CharNgram):
        def __init__(self, text: str, *args, **kwargs) -> None:
            super().__init__(text, *args, **kwargs)
            built.append((text, self))

    monkeypatch.setattr(ngram, "CharNgram", Recording)
    r = ngram.anchor(str(gl), max_order=4)
    snap = ngram.open_snapshot(str(gl))
    assert [t for t, _ in built] == [snap.text("train")] and r["train_chars"] == len(built[0][0])
    alone = CharNgram(snap.text("train"), len(r["dev_bits_per_char_by_order"]))
    assert r["dev_bits_per_char_by_order"] == pytest.approx(alone.bits_per_char(snap.text("dev")), abs=1e-12)
    # a character only in dev and test is the one unseen symbol, whatever they say
    novel = "\u4e2d"
    fit(TRAIN, DEV + novel * 50, TEST + novel * 50)
    text, model = built[-1]
    assert text == TRAIN and novel not in model.vocab
    assert model.probs("de ", novel) == model.probs("de ", UNSEEN)
    monkeypatch.undo()
    assert run_cli(ngram.main, ["--corpus", str(gl), "--method", WB, "--max-order", "3"]) == 0
    assert f"{WB} order" in capsys.readouterr().out
    with pytest.raises(SystemExit) as usage:
        ngram.main(["--corpus", str(gl), "--method", "good-turing"])
    assert usage.value.code == 2


def test_next_character_distribution_and_sampling(model: CharNgram) -> None:
    """`next_probs` is `probs` for every train character at once (less UNSEEN's share), and a
    sample draws only train characters, the same text for the same seed."""
    for history in ("", "de", DEV[300:310]):
        chars, p = model.next_probs(history, 5)
        assert len(chars) == len(model.vocab) - 1 and UNSEEN not in chars
        direct = [model.probs(history, c)[4] for c in chars]
        assert np.allclose(p, direct, atol=1e-12, rtol=0) and 0.99 < p.sum() < 1.0
    text = model.sample("A análise ", 120, 7, 0.8, seed=3)
    assert len(text) == 120 and set(text) <= set(TRAIN)
    assert text == model.sample("A análise ", 120, 7, 0.8, seed=3) != model.sample("A análise ", 120, 7, 0.8, seed=4)


@pytest.mark.parametrize("method", [KN, WB])
def test_a_token_ngram_gives_each_candidate_what_the_text_pass_gives_the_next_symbol(method: str) -> None:
    # symbols: the characters of real text as ids (what a tokenizer's ids are to `Ngram`)
    chars = CharNgram(TRAIN, max_order=2)
    ids = chars.encode(TRAIN)
    model = ngram.Ngram(ids, chars.base, chars.base, max_order=5, method=method)
    rows = chars.encode(DEV[:4 * 40]).reshape(4, 40)
    everything = np.broadcast_to(np.arange(chars.base), (4, 39, chars.base))
    for order in (1, 3, 5):
        table = model.next_probs_of(rows[:, :-1], everything, order)  # [rows, positions, vocabulary]
        assert np.allclose(table.sum(-1), 1.0, atol=1e-9, rtol=0), (order, table.sum(-1).min())
        # the probability of the symbol that came is the one a pass over the row as a text gives it
        seen = np.take_along_axis(table, rows[:, 1:, None], -1)[..., 0]
        assert np.allclose(seen, np.exp([model.log_probs(r, order)[1:] for r in rows]), atol=1e-12, rtol=0)


def test_a_token_ngram_scores_a_stream_as_the_character_model_scores_its_text() -> None:
    chars = CharNgram(TRAIN, max_order=6)
    model = ngram.Ngram(chars.encode(TRAIN), chars.base, len(chars.vocab), max_order=6)
    assert np.allclose(model.bits_per_char(chars.encode(DEV)), chars.bits_per_char(DEV), atol=1e-12, rtol=0)
    assert np.argmin(ngram.dev_curve(model, chars.encode(DEV))) == np.argmin(ngram.dev_curve(chars, DEV))
