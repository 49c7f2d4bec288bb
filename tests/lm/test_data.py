"""Token data: encoding cache, packing covers every token once, deterministic resumable batches,
and the real/augmented mixture."""
from __future__ import annotations


import numpy as np
import pytest

from tests.helpers import gl_lines
import lm.data as data
from lm.data import Batches, Packed, Pool, encode_documents, pack, token_stream
from lm.errors import DataError
from lm.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def stream(tok: Tokenizer) -> np.ndarray:
    docs = ["\n".join(gl_lines("dev", 120)), "\n".join(gl_lines("test", 80))]
    return encode_documents(tok, docs)


def test_stream_starts_and_separates_documents_with_eos(tok: Tokenizer) -> None:
    docs = ["Primeiro documento.", "Segundo\ndocumento."]
    s = encode_documents(tok, docs)
    eos = tok.eos_id
    assert s[0] == eos and s[-1] == eos and int((s == eos).sum()) == 3
    cut = int(np.flatnonzero(s == eos)[1])
    assert tok.decode(s[1:cut]) == docs[0] and tok.decode(s[cut + 1:-1]) == docs[1]


@pytest.mark.parametrize("context", [7, 32, 64])
def test_packing_covers_every_token_exactly_once(stream: np.ndarray, context: int) -> None:
    p = pack(stream, context, pad_id=0)
    assert p.tokens.shape == (len(p), context + 1) and p.mask.shape == (len(p), context)
    # inputs and targets of consecutive sequences tile the stream; the padding is masked out
    targets = p.tokens[:, 1:][p.mask > 0]
    assert np.array_equal(targets, stream[1:])
    assert int(p.mask.sum()) == len(stream) - 1
    for i in range(len(p) - 1):
        assert np.array_equal(p.tokens[i], stream[i * context: i * context + context + 1])


def test_an_epoch_of_batches_visits_every_sequence_once(stream: np.ndarray) -> None:
    p = pack(stream, 16, pad_id=0)
    b = Batches(Pool("real", p), batch_size=5, seed=3)
    seen = []
    while b.epoch == 0:
        batch = b.next()
        seen.append((batch.inputs, batch.targets, batch.mask))
    xs = np.concatenate([s[0] for s in seen])
    ys = np.concatenate([s[1] for s in seen])
    ms = np.concatenate([s[2] for s in seen])
    # the epoch's sequences (the last batch spills into epoch 1: drop what it took from there)
    spill = len(xs) - len(p)
    xs, ys, ms = xs[:len(xs) - spill], ys[:len(ys) - spill], ms[:len(ms) - spill]
    got = sorted(map(tuple, np.concatenate([xs, ys[:, -1:]], 1).tolist()))
    assert got == sorted(map(tuple, p.tokens.tolist()))
    # so every target token of the stream is trained on exactly once per epoch
    assert int(ms.sum()) == len(stream) - 1
    assert b.state() == {"epoch": 1, "index": spill}


def test_batches_are_deterministic_by_seed_and_resume_exactly(stream: np.ndarray) -> None:
    """Guards the epoch boundary: batches run on from one seeded permutation per epoch to the
    next (the batch that straddles it ends epoch 0 and starts epoch 1), each epoch reads every
    sequence once in a new order, and a restored position, before or after the boundary, gives
    exactly the batches a straight run gives."""
    p = pack(stream, 16, pad_id=0)
    real = Pool("real", p)
    n = len(p)  # 1,204 sequences: batches of 5 leave 4 at the end of an epoch
    assert n % 5 == 4
    a, same, other = Batches(real, 5, seed=7), Batches(real, 5, seed=7), Batches(real, 5, seed=8)
    first = [a.next() for _ in range(30)]
    assert all(np.array_equal(x.inputs, same.next().inputs) for x in first)
    assert not all(np.array_equal(x.inputs, other.next().inputs) for x in first)
    state = a.state()
    later = [a.next() for _ in range(n // 5 - 30 + 60)]  # past the end of epoch 0 (1,204 rows), ~60 batches into epoch 1
    rows = np.concatenate([b.rows for b in first + later])
    assert (np.concatenate([b.pools for b in first + later]) == 0).all()
    # every sequence once per epoch, epoch 1 in a new order; the straddling batch: 4 + 1 rows
    assert sorted(rows[:n].tolist()) == list(range(n))
    e1 = rows[n:]
    assert len(e1) == 5 * (30 + len(later)) - n > 250 and len(set(e1.tolist())) == len(e1)
    assert np.array_equal(rows[:n], a.order(0)[:, 1]) and np.array_equal(e1, a.order(1)[:len(e1), 1])
    assert (e1 != rows[:len(e1)]).mean() > 0.9
    straddle = later[n // 5 - 30]
    assert np.array_equal(straddle.rows, np.concatenate([rows[n - 4:n], e1[:1]]))
    assert np.array_equal(straddle.inputs, p.tokens[straddle.rows, :-1])
    assert a.state() == {"epoch": 1, "index": len(e1)}
    # resume inside epoch 0, right before the straddling batch, and inside epoch 1
    for k in (0, n // 5 - 30, n // 5 - 30 + 1, len(later) - 7):
        resumed = Batches(real, 5, seed=7)
        straight = Batches(real, 5, seed=7)
        for _ in range(30 + k):
            straight.next()
        resumed.restore(straight.state())
        assert all(np.array_equal(x.rows, resumed.next().rows) and np.array_equal(x.inputs, straight.next().inputs)
                   for x in later[k:k + 3]), k
    resumed = Batches(real, 5, seed=7)
    resumed.restore(state)
    assert all(np.array_equal(x.inputs, resumed.next().inputs) for x in later)


def test_mixture_weight_sets_the_share_of_augmented_sequences(stream: np.ndarray) -> None:
    real = Pool("real", pack(stream[:2000], 16, pad_id=0))
    aug_stream = stream[2000:2600] + 10_000  # distinguishable ids
    aug = Pool("aug", pack(aug_stream, 16, pad_id=0))
    for w in (0.25, 0.5, 0.75):
        b = Batches(real, 8, seed=0, augmented=[aug], share=w)
        n = b.epoch_size
        xs = np.concatenate([b.next().inputs for _ in range(-(-n // 8))])[:n]
        from_aug = int((xs[:, 1] >= 10_000).sum())
        assert from_aug == b.n_aug == round(len(real) * w / (1 - w))
        assert abs(from_aug / n - w) < 0.02
    assert Batches(real, 8, seed=0).n_aug == 0
    with pytest.raises(DataError):
        Batches(real, 8, seed=0, augmented=[aug], share=1.0)


def test_token_cache_encodes_once_per_key_and_tokenizer(tok: Tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    docs = ["\n".join(gl_lines("dev", 30))]
    first = token_stream(tok, docs, "gl/v1/dev")
    files = list(data.cache_dir().glob("*.npy"))
    assert files
    calls = []
    monkeypatch.setattr(data, "encode_documents", lambda *a: calls.append(a) or np.zeros(3, np.int32))
    again = token_stream(tok, docs, "gl/v1/dev")
    assert np.array_equal(first, again) and not calls
    token_stream(tok, docs, "gl/v2/dev")  # a new corpus version is encoded anew
    assert len(calls) == 1


def test_empty_stream_is_a_clear_error(tok: Tokenizer) -> None:
    with pytest.raises(DataError, match="empty"):
        pack(encode_documents(tok, [])[:1], 16, tok.eos_id)


def test_a_seed_reads_real_text_in_one_order_whatever_the_augmented_pools(stream: np.ndarray) -> None:
    """Paired seeds: a student with augmented pools and a baseline without read the same real
    sequences in the same order, epoch after epoch; another seed reads another order."""
    real = Pool("real", pack(stream[:2000], 16, pad_id=0))
    aug = Pool("aug", pack(stream[2000:2600] + 10_000, 16, pad_id=0))

    def real_rows(b: Batches, n: int) -> list[int]:
        rows = []
        while len(rows) < n:
            batch = b.next()
            rows += batch.rows[batch.pools == 0].tolist()
        return rows[:n]
    n = 3 * len(real)  # three epochs of the baseline
    baseline = real_rows(Batches(real, 8, seed=5), n)
    assert baseline == real_rows(Batches(real, 8, seed=5, augmented=[aug], share=0.3), n)
    assert baseline != real_rows(Batches(real, 8, seed=6), n)
    assert sorted(baseline[:len(real)]) == list(range(len(real)))


def test_mixture_weights_share_out_the_augmented_rows_and_tile_small_pools(stream: np.ndarray) -> None:
    """Guards the mixture (`Batches`): an epoch holds every real sequence once plus
    round(n_real * share / (1 - share)) augmented rows, shared out by the weights (a pool
    without weight gets none), each pool giving a fresh permutation of its sequences per epoch,
    tiled when its share is larger than the pool; an empty pool or all-zero weights: real only."""
    real = Pool("real", pack(stream[:1601], 16, pad_id=0))                 # 100 sequences
    small = Pool("small", pack(stream[2000:2161] + 10_000, 16, pad_id=0))  # 10 sequences
    big = Pool("big", pack(stream[3000:6201] + 20_000, 16, pad_id=0))      # 200 sequences
    unweighted = Pool("unweighted", pack(stream[7000:7801], 16, pad_id=0))
    assert (len(real), len(small), len(big)) == (100, 10, 200)
    b = Batches(real, 8, seed=4, augmented=[small, big, unweighted], weights={"small": 0.6, "big": 0.4}, share=0.5)
    assert b.per_pool == [100, 60, 40, 0] and b.epoch_size == 200
    picked = {}
    for epoch in (0, 1):
        batches = [b.next() for _ in range(25)]  # 25 x 8 = one epoch exactly
        pools = np.concatenate([x.pools for x in batches])
        rows = np.concatenate([x.rows for x in batches])
        assert b.state() == {"epoch": epoch + 1, "index": 0}
        assert sorted(rows[pools == 0].tolist()) == list(range(100))
        assert np.bincount(rows[pools == 1], minlength=10).tolist() == [6] * 10  # tiled six times
        assert len(set(rows[pools == 2].tolist())) == 40 and not (pools == 3).any()
        picked[epoch] = rows[pools == 2]
        inputs = np.concatenate([x.inputs for x in batches])
        assert (inputs[pools == 1] >= 10_000).all() and (inputs[pools == 2] >= 20_000).all()
    assert set(picked[0].tolist()) != set(picked[1].tolist())  # a fresh permutation each epoch
    assert Batches(real, 8, seed=4, augmented=[small], weights={"small": 0.0}, share=0.5).per_pool == [100, 0]
    empty = Pool("empty", Packed(real.packed.tokens[:0], real.packed.mask[:0]))
    e = Batches(real, 8, seed=4, augmented=[empty], share=0.5)
    assert e.per_pool == [100] and e.epoch_size == 100 and len(e.pools) == 1
