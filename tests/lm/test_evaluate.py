"""Bits per character (tokenizer-independent, every token scored once), generation, and a model
that is missing, corrupt, or asked about an empty split."""
from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from lm.corpus import open_snapshot
from lm.errors import run_cli
from lm.evaluate import main as eval_main
from lm.scoring import bits_per_char, evaluate, windows
from lm.generate import generate, generate_ids, main as gen_main, sample_next
from lm.loader import load_model
from lm.tokenizer import Tokenizer, train_tokenizer
from tests.helpers import assert_generated, copy_with_empty, corpora, tiny_run


class CharUnigramModel:
    """A reference model that gives each token the product of its characters' probabilities,
    whatever the context: the text's probability is then the same under any tokenizer."""

    def __init__(self, tokenizer: Tokenizer, char_logp: dict[str, float], corpus: Path, context: int = 16):
        self.tokenizer, self.context = tokenizer, context
        self.info = {"corpus": {"path": str(corpus)}}
        table = np.zeros(tokenizer.vocab_size)
        for i in range(tokenizer.vocab_size):
            surface = tokenizer.decode([i]) if not tokenizer.sp.is_control(i) else ""
            table[i] = -sum(char_logp[c] for c in surface) if all(c in char_logp for c in surface) else 1e9
        self.table = table

    def nll(self, inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        return self.table[targets]

    def next_logits(self, tokens: np.ndarray) -> np.ndarray:
        return -self.table


def test_bits_per_char_does_not_depend_on_the_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> None:
    path = corpora(tmp_path_factory)["shakespeare"]
    snap = open_snapshot(path)
    train, test = snap.text("train"), snap.text("test")
    counts = Counter(train + test)  # every test character has a probability
    total = sum(counts.values())
    char_logp = {c: math.log(n / total) for c, n in counts.items()}
    direct = bits_per_char(-sum(char_logp[c] for c in test), len(test))  # the character-level figure
    results = []
    for vocab, kind in ((400, "unigram"), (600, "bpe"), (1024, "bpe")):
        tok = train_tokenizer(snap.documents("train"), vocab, kind)
        r = evaluate(CharUnigramModel(tok, char_logp, path), "test", stride=5)
        assert r["chars"] == len(test) and r["tokens"] == len(tok.encode(test))
        results.append(r)
    assert len({r["tokens"] for r in results}) == 3  # really different segmentations
    for r in results:
        assert r["bits_per_char"] == pytest.approx(direct, rel=1e-9)
        assert r["nll_bits"] == pytest.approx(direct * len(test), rel=1e-9)
        assert r["nats_per_char"] == pytest.approx(direct * math.log(2), rel=1e-9)


@pytest.mark.parametrize("context,stride", [(8, 8), (8, 3), (8, 1), (32, 16)])
def test_windows_score_every_token_once_with_enough_context(context: int, stride: int) -> None:
    for n in (2, 5, 8, 9, 31, 100):
        scored = Counter()
        for b, first in windows(n, context, stride):
            for t in range(first, min(b + context, n - 1) + 1):
                scored[t] += 1
                assert t - b >= 1  # the window holds the token's predecessor
                if first > 1:
                    assert t - b >= context - stride  # context kept from the window before
        assert sorted(scored) == list(range(1, n)) and set(scored.values()) == {1}


def test_evaluate_a_trained_run(tmp_path_factory: pytest.TempPathFactory, capsys) -> None:
    run = tiny_run(tmp_path_factory)
    capsys.readouterr()
    assert eval_main([str(run), "--split", "test", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    test = open_snapshot(corpora(tmp_path_factory)["gl"]).text("test")
    tok = Tokenizer.load(run / "tokenizer.model")
    assert r["chars"] == len(test) and r["tokens"] == len(tok.encode(test))
    assert r["bits_per_char"] == pytest.approx(r["nll_bits"] / r["chars"])
    assert r["ppl"] == pytest.approx(2 ** (r["nll_bits"] / r["tokens"]))
    assert 1.0 < r["bits_per_char"] < 8.0 and r["stride"] == 16 and r["checkpoint"] == "best/60"
    # more context can only help a trained model a little; never a different figure wholesale
    full = evaluate(load_model(run), "test", stride=4)
    blocks = evaluate(load_model(run), "test", stride=32)
    assert full["bits_per_char"] <= blocks["bits_per_char"] + 1e-6
    assert abs(full["bits_per_char"] - r["bits_per_char"]) < 0.1


def test_generate_is_seeded_and_samples_by_the_rules(tmp_path_factory: pytest.TempPathFactory, capsys) -> None:
    run = tiny_run(tmp_path_factory)
    capsys.readouterr()
    model = load_model(run)
    a = generate(model, "A enfermidade", 30, temperature=1.0, seed=1)
    ids = generate_ids(model, "A enfermidade", 30, temperature=1.0, seed=1)
    assert_generated(model, "A enfermidade", 30, ids, temperature=1.0, seed=1)
    assert a == model.tokenizer.decode(ids) and len(ids) == 30  # this draw meets no end of sequence
    assert a == generate(model, "A enfermidade", 30, temperature=1.0, seed=1)
    assert a != generate(model, "A enfermidade", 30, temperature=1.0, seed=2)
    assert generate(model, "O", 20, temperature=0) == generate(model, "O", 20, temperature=1.0, top_k=1)
    assert gen_main([str(run), "--prompt", "O", "--max-tokens", "10", "--seed", "3"]) == 0
    ids = generate_ids(model, "O", 10, temperature=0.8, seed=3)  # the command's defaults
    assert_generated(model, "O", 10, ids, temperature=0.8, seed=3)
    assert capsys.readouterr().out == "O" + model.tokenizer.decode(ids) + "\n"  # the prompt, then every token
    rng = np.random.default_rng(0)
    logits = np.array([0.0, 3.0, 2.9, -1.0])
    assert {sample_next(logits, rng, 1.0, top_k=2) for _ in range(200)} == {1, 2}
    assert {sample_next(logits, rng, 1.0, top_p=0.3) for _ in range(50)} == {1}
    assert sample_next(logits, rng, 0.0) == 1


def test_missing_corrupt_and_empty_inputs_stop_with_one_line(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, capsys) -> None:
    run = tiny_run(tmp_path_factory)
    capsys.readouterr()

    def fails(argv: list[str], code: int, words: str) -> None:
        assert run_cli(eval_main, argv) == code
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and words in err, err

    fails([str(tmp_path / "none"), "--split", "test"], 1, "does not exist")
    fails([str(tmp_path), "--split", "test"], 1, "not a model")
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(run / "run.json", bare)
    shutil.copy(run / "tokenizer.model", bare)
    fails([str(bare), "--split", "test"], 1, "no checkpoint")
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    for f in (broken / "best").rglob("*"):
        if f.is_file() and f.parent.name in ("d", "ocdbt.process_0") or f.name == "manifest.ocdbt":
            f.write_bytes(b"\0garbage")
    fails([str(broken), "--split", "test"], 1, "corrupt")
    (broken / "tokenizer.model").write_bytes(b"not a model")
    fails([str(broken), "--split", "test"], 1, "not a SentencePiece model")
    empty = copy_with_empty(corpora(tmp_path_factory)["gl"], "test", tmp_path / "c")
    fails([str(run), "--split", "test", "--corpus", str(empty)], 1, "test split")
    with pytest.raises(SystemExit) as exc:
        eval_main([str(run), "--split", "train"])
    assert exc.value.code == 2
