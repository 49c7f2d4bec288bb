"""The Beam augmentation pipeline on a real gl-ctg snapshot, and the transformers back-translation
path on tiny randomly initialised Marian models saved to a temporary folder."""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from augment.backtranslate import BackTranslateAugmenter
from augment.noise import NoiseAugmenter
from pipelines.augment import main as augment_main
from pipelines.augmentation import augment_snapshot
from pipelines.build import build
from pipelines.errors import SpecError, run_cli
from pipelines.spec import load_spec

from tests.helpers import AUGMENT, gl_lines, read_split, small_spec, tree_digest

@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("augsnap")
    build(load_spec(small_spec(folder)), str(folder / "out"))
    corpus = folder / "out" / "glsmall"
    augment_snapshot(str(corpus))
    return corpus


def latest(corpus: Path) -> Path:
    return corpus / (corpus / "LATEST").read_text().strip()


def test_provenance_is_complete_and_parents_are_train_only(snapshot: Path) -> None:
    vdir = latest(snapshot)
    rows = pq.read_table(vdir / "augmented" / "train").to_pylist()
    stats = json.loads((vdir / "augmented" / "stats.json").read_text())
    train = {r["id"]: r["text"] for r in read_split(vdir, "train")}
    held_out = {r["id"] for s in ("dev", "test") for r in read_split(vdir, s)}
    assert rows and set(rows[0]) == {"id", "text", "parent_id", "augmenter", "params", "seed"}
    for r in rows:
        assert all(r[k] not in (None, "") for k in r)
        assert r["parent_id"] in train and r["parent_id"] not in held_out
        assert r["id"] not in train and r["id"] not in held_out and r["text"] != train[r["parent_id"]]
        json.loads(r["params"])
    assert len({r["id"] for r in rows}) == len(rows)
    by_aug = {name: sum(r["augmenter"] == name for r in rows) for name in stats["augmenters"]}
    for name, s in stats["augmenters"].items():
        assert s["kept"] == by_aug[name] and s["produced"] == s["kept"] + sum(s["rejected"].values())
        assert s["inputs"] == len(train) and s["failed"] == 0
    assert by_aug["backtranslate"] > 0.5 * len(train) and by_aug["noise"] > len(train)
    pivots = {json.loads(r["params"])["pivot"] for r in rows if r["augmenter"] == "backtranslate"}
    assert pivots == {"es", "pt"}


def test_same_seed_gives_identical_shards_in_both_running_modes(snapshot: Path) -> None:
    vdir = latest(snapshot)
    shards = lambda: {k: v for k, v in tree_digest(vdir / "augmented").items() if k.endswith(".parquet")}
    first = shards()
    augment_snapshot(str(snapshot))
    assert shards() == first
    augment_snapshot(str(snapshot), beam_args=["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    assert shards() == first


def test_backend_dying_mid_batch_loses_no_good_record(snapshot: Path, tmp_path: Path, monkeypatch) -> None:
    """A fake `apertium` on PATH that crashes on one sentence: only that one ends in failed.jsonl.
    It augments its own copy of the snapshot: the module's stays as the other tests expect it."""
    corpus = tmp_path / "copy" / snapshot.name
    shutil.copytree(snapshot, corpus)
    vdir = latest(corpus)
    victim = read_split(vdir, "train")[7]
    real = "/usr/bin/apertium"
    fake = tmp_path / "bin" / "apertium"
    fake.parent.mkdir()
    fake.write_text(f"""#!{sys.executable}
import os, sys
if "-l" not in sys.argv:
    data = sys.stdin.buffer.read()
    if {victim['text'][:40].encode()!r} in data:
        sys.exit("segmentation fault (simulated)")
    r, w = os.pipe()
    if os.fork() == 0:
        os.close(r); os.write(w, data); os._exit(0)
    os.close(w); os.dup2(r, 0)
os.execv({real!r}, [{real!r}] + sys.argv[1:])
""")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    only_bt = AUGMENT.split("[[augment.steps]]\naugmenter = \"synonyms\"")[0].replace('["es", "pt"]', '["es"]')
    spec = load_spec(small_spec(tmp_path, only_bt))
    stats = augment_snapshot(str(corpus), spec=spec)
    failed = [json.loads(line) for line in (vdir / "augmented" / "failed.jsonl").read_text().splitlines()]
    assert [f["parent_id"] for f in failed] == [victim["id"]]
    assert "simulated" in failed[0]["error"] or "exited" in failed[0]["error"]
    s = stats["augmenters"]["backtranslate"]
    assert s["failed"] == 1 and s["inputs"] == len(read_split(vdir, "train"))
    rows = pq.read_table(vdir / "augmented" / "train").to_pylist()
    parents = {r["parent_id"] for r in rows}
    assert victim["id"] not in parents and len(parents) > 0.5 * (s["inputs"] - 1)


def test_augment_errors(snapshot: Path, tmp_path: Path, capsys) -> None:
    bad = small_spec(tmp_path, AUGMENT.replace('ops = ["swap"', 'ops = ["shuffle"'))
    assert run_cli(augment_main, [str(snapshot), "--spec", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "augment.steps[2]" in err and "shuffle" in err
    missing = small_spec(tmp_path, AUGMENT.replace('pivot = ["es", "pt"]', 'pivot = ["fr"]'))
    assert run_cli(augment_main, [str(snapshot), "--spec", str(missing)]) == 1
    assert "no Apertium mode gl-fr" in capsys.readouterr().err
    assert run_cli(augment_main, [str(tmp_path / "nothing")]) == 1
    assert "no LATEST" in capsys.readouterr().err


def make_tiny_marian(folder: Path, lines: list[str], seed: int) -> Path:
    """A randomly initialised two-layer Marian model with a SentencePiece vocabulary of real text."""
    import sentencepiece as spm
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(folder / "sp"), vocab_size=300,
                                   character_coverage=1.0, num_threads=1, minloglevel=2)
    for name in ("source.spm", "target.spm"):
        (folder / name).write_bytes((folder / "sp.model").read_bytes())
    sp = spm.SentencePieceProcessor(model_file=str(folder / "sp.model"))
    vocab = {"</s>": 0, "<unk>": 1, "<pad>": 2}
    for i in range(sp.get_piece_size()):
        vocab.setdefault(sp.id_to_piece(i), len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    tok = MarianTokenizer(vocab=str(folder / "vocab.json"), source_spm=str(folder / "source.spm"),
                          target_spm=str(folder / "target.spm"))
    config = MarianConfig(vocab_size=len(vocab), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                          decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=256,
                          pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                          decoder_start_token_id=tok.pad_token_id, forced_eos_token_id=tok.eos_token_id)
    torch.manual_seed(seed)
    MarianMTModel(config).save_pretrained(folder / "model", safe_serialization=True)
    tok.save_pretrained(folder / "model")
    return folder / "model"


def test_transformers_backend_on_tiny_local_marian_models(tmp_path: Path) -> None:
    lines = gl_lines("train", 400)
    forward = make_tiny_marian(tmp_path / "gl-es", lines, 0)
    backward = make_tiny_marian(tmp_path / "es-gl", lines, 1)
    assert (forward / "model.safetensors").exists() and not (forward / "pytorch_model.bin").exists()
    texts = lines[:6]
    beam = BackTranslateAugmenter("gl", pivot="es", backend="transformers", forward=str(forward), backward=str(backward),
                                  num_beams=2, max_new_tokens=12, batch_size=4)
    out = beam.augment_batch(texts, 5)
    assert len(out) == len(texts) and all(len(v) == 1 and isinstance(v[0], str) for v in out)
    assert out == beam.augment_batch(texts, 5)
    sample = BackTranslateAugmenter("gl", pivot="es", backend="transformers", forward=str(forward), backward=str(backward),
                                    do_sample=True, top_k=20, top_p=0.9, max_new_tokens=12, variants=2)
    seeds = list(range(100, 106))
    first = sample.augment_batch(texts, seeds)
    assert all(len(v) == 2 for v in first)
    assert sample.augment_batch(texts[3:], seeds[3:]) == first[3:]  # each record draws from its own seed
    assert any(a != b for a, b in first)  # two samples per record differ
    with pytest.raises(Exception, match="cannot load translation model"):
        BackTranslateAugmenter("gl", pivot="es", backend="transformers", forward=str(tmp_path / "none"),
                               backward=str(backward)).augment_batch(texts, 1)


NOISE_ONLY = '\n[augment]\nseed = 1\n[[augment.steps]]\naugmenter = "noise"\nops = ["swap"]\nrate = 0.1\n'


@pytest.mark.parametrize("augment, key", [
    (NOISE_ONLY.replace("rate = 0.1", "rate = nan"), "augment.steps[0].rate"),
    (NOISE_ONLY + "variants = 2.5\n", "augment.steps[0].variants"),
    (NOISE_ONLY + "rates = { swap = -0.5 }\n", "augment.steps[0].rates.swap"),
    (NOISE_ONLY + '[[augment.steps]]\naugmenter = "backtranslate"\npivot = "es"\nbeam_size = 4\n',
     "augment.steps[1].beam_size"),
    (NOISE_ONLY + "[augment.filters]\nmax_edit_ratio = nan\n", "augment.filters.max_edit_ratio"),
], ids=["rate-nan", "variants-2.5", "rates-negative", "apertium-beam_size", "filters-nan"])
def test_bad_step_values_are_spec_errors_before_any_work(snapshot: Path, tmp_path: Path, capsys,
                                                          augment: str, key: str) -> None:
    """Checked when the spec is parsed (a build refuses it too); the published variants stay."""
    before = tree_digest(latest(snapshot) / "augmented")
    bad = small_spec(tmp_path, augment)
    assert run_cli(augment_main, [str(snapshot), "--spec", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and key in err, err
    with pytest.raises(SpecError, match=re.escape(key)):
        load_spec(bad)
    assert tree_digest(latest(snapshot) / "augmented") == before


def test_a_run_where_every_record_fails_publishes_nothing(snapshot: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    corpus = tmp_path / "copy" / snapshot.name
    shutil.copytree(snapshot, corpus)
    vdir = latest(corpus)
    before = tree_digest(vdir)

    def broken(self, texts, seeds):
        raise RuntimeError("backend down\nsecond line")

    monkeypatch.setattr(NoiseAugmenter, "augment_batch", broken)
    spec = small_spec(tmp_path, NOISE_ONLY)
    assert run_cli(augment_main, [str(corpus), "--spec", str(spec)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "every record failed" in err and "backend down" in err, err
    assert tree_digest(vdir) == before  # the previous augmented/ and card stay, no staging left behind
    assert sorted(p.name for p in vdir.iterdir()) == sorted({k.split("/")[0] for k in before})
