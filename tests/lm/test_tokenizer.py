"""SentencePiece tokenizer: exact round trips (unseen bytes too), determinism, vocabulary size,
too little text, and dev/test text never reaching tokenizer training."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import SENTINEL, SHAKESPEARE, corpora, gl_lines
from lm.corpus import open_snapshot
from lm.errors import DataError, UsageError
from lm.tokenizer import MIN_VOCAB, Tokenizer, default_vocab_size, train_tokenizer
from lm.train import Run, parse_args

UNSEEN = "Emoji 😀🦙, CJK 日本語の文章, Greek λόγος, NUL \x00, tab\t,  two  spaces \n\n\r\n trailing "


@pytest.fixture(scope="module")
def gl_tok() -> Tokenizer:
    return train_tokenizer(["\n".join(gl_lines("train", 600))], 512)


def test_round_trip_is_exact_including_bytes_never_seen(gl_tok: Tokenizer) -> None:
    train_chars = set("\n".join(gl_lines("train", 600)))
    assert not {"😀", "日", "λ"} & train_chars
    for text in [UNSEEN, "\n".join(gl_lines("test", 50)), SHAKESPEARE.read_text(encoding="utf-8")[:5000], ""]:
        ids = gl_tok.encode(text)
        assert gl_tok.decode(ids) == text
    # unseen characters go through byte pieces, not <unk>
    assert gl_tok.sp.unk_id() not in gl_tok.encode(UNSEEN)
    assert any(gl_tok.sp.is_byte(i) for i in gl_tok.encode("😀"))


def test_training_is_deterministic_and_saved_model_loads(gl_tok: Tokenizer, tmp_path: Path) -> None:
    again = train_tokenizer(["\n".join(gl_lines("train", 600))], 512)
    assert again.model == gl_tok.model and again.sha256 == gl_tok.sha256
    gl_tok.save(tmp_path / "t.model")
    loaded = Tokenizer.load(tmp_path / "t.model")
    assert loaded.sha256 == gl_tok.sha256 and loaded.encode(UNSEEN) == gl_tok.encode(UNSEEN)


def test_bpe_option_and_special_ids(gl_tok: Tokenizer) -> None:
    bpe = train_tokenizer(["\n".join(gl_lines("train", 600))], 512, "bpe")
    assert bpe.model_type == "bpe" and bpe.vocab_size == 512 and bpe.sha256 != gl_tok.sha256
    assert bpe.decode(bpe.encode(UNSEEN)) == UNSEEN
    assert gl_tok.eos_id == bpe.eos_id == 1
    assert gl_tok.encode("a\nb").count(gl_tok.sp.piece_to_id("\n")) == 1  # newline is one piece
    with pytest.raises(UsageError):
        train_tokenizer(["abc"], 512, "wordpiece")


def test_vocab_size_follows_corpus_size() -> None:
    assert default_vocab_size(0) == MIN_VOCAB
    assert default_vocab_size(400_000) == 512        # gl-ctg
    assert default_vocab_size(936_000) == 1024       # Tiny Shakespeare
    assert default_vocab_size(10_000_000) == 4096
    assert default_vocab_size(10**12) == 32768
    sizes = [default_vocab_size(n) for n in (10**4, 10**5, 10**6, 10**7, 10**8)]
    assert sizes == sorted(sizes)


def test_too_little_text_for_the_vocabulary_is_a_clear_error() -> None:
    with pytest.raises(DataError, match=r"cannot train a 4000-piece unigram tokenizer on \d+ characters.*smaller --vocab-size"):
        train_tokenizer(gl_lines("train", 20), 4000)
    with pytest.raises(DataError, match="train split is empty"):
        train_tokenizer(["", "  "], 512)


def test_dev_and_test_text_never_enter_tokenizer_training(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    gl = corpora(tmp_path_factory)["gl"]
    snap = open_snapshot(gl)
    assert SENTINEL in snap.text("dev") and SENTINEL in snap.text("test")
    assert SENTINEL not in snap.text("train")
    # the tokenizer `lm.train` makes for a run
    tok = Run(parse_args(["--corpus", str(gl), "--out", str(tmp_path / "run"), "--steps", "1"])).tokenizer()
    pieces = [tok.sp.id_to_piece(i) for i in range(tok.vocab_size)]
    assert not any(SENTINEL[1:5] in p for p in pieces)
    assert (tmp_path / "run" / "tokenizer.model").read_bytes() == tok.model
    # control: the same text with the held-out lines added does learn the word
    leaky = train_tokenizer(snap.documents("train") + snap.documents("dev") + snap.documents("test"), tok.vocab_size)
    assert any(SENTINEL[1:5] in leaky.sp.id_to_piece(i) for i in range(leaky.vocab_size))
