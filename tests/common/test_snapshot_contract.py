"""What a published snapshot promises its readers: it is a Hugging Face dataset folder as it is,
and no consumer (pipelines.augment, lm.train, lm.distill) reads a shard that manifest.json or the
augmented set's stats.json does not vouch for."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import pytest

from lm.corpus import open_snapshot, read_columns
from lm.errors import DataError, run_cli as lm_cli
from lm.train import main as train_main
from pipelines.augment import main as augment_main
from pipelines.augmentation import augment_snapshot
from pipelines.build import build
from pipelines.errors import run_cli
from pipelines.lock import CorpusLock
from pipelines.refresh import main as refresh_main
from pipelines.spec import load_spec

from tests.helpers import TINY, gl_split_spec, noise_step

def card_spec(folder: Path, train_lines: int = 60) -> Path:
    """gl-ctg's first `train_lines`/20/20 lines as sources, noise as the augmenter."""
    return gl_split_spec(folder, (train_lines, 20, 20), noise_step(3), "glcard")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A published, not yet augmented snapshot: OUT/glcard."""
    folder = tmp_path_factory.mktemp("contract")
    build(load_spec(card_spec(folder)), str(folder / "out"))
    return folder / "out" / "glcard"


def copy_corpus(corpus: Path, dest: Path) -> tuple[Path, Path]:
    """A private copy of the corpus (tests change files); (corpus folder, version folder)."""
    shutil.copytree(corpus, dest / corpus.name)
    corpus = dest / corpus.name
    return corpus, corpus / (corpus / "LATEST").read_text().strip()


def test_snapshot_folder_loads_with_datasets_and_so_do_its_variants(built: Path, tmp_path: Path) -> None:
    corpus, vdir = copy_corpus(built, tmp_path)
    splits = json.loads((vdir / "stats.json").read_text())["splits"]
    cache = str(tmp_path / "hf")
    whole = datasets.load_dataset(str(vdir), cache_dir=cache)
    assert {k: len(v) for k, v in whole.items()} == {"train": splits["train"], "validation": splits["dev"],
                                                     "test": splits["test"]}
    assert whole["train"].column_names[:2] == ["id", "text"]
    with pytest.raises(ValueError):  # no variants yet: no "augmented" configuration
        datasets.load_dataset(str(vdir), "augmented", cache_dir=cache)
    stats = augment_snapshot(str(corpus))
    card = (vdir / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\n") and card.count("# glcard (") == 1  # the card's body is kept once
    variants = datasets.load_dataset(str(vdir), "augmented", cache_dir=cache)
    assert list(variants) == ["train"] and len(variants["train"]) == stats["total"]["kept"] > 0
    assert set(variants["train"].column_names) == {"id", "text", "parent_id", "augmenter", "params", "seed"}
    # The default configuration still gives the three splits, not the variants joined to train.
    again = datasets.load_dataset(str(vdir), cache_dir=cache)
    assert len(again["train"]) == splits["train"]


def test_a_shard_swapped_after_publication_is_refused_by_every_reader(built: Path, tmp_path: Path, capsys) -> None:
    corpus, vdir = copy_corpus(built, tmp_path)
    (train_shard,) = (vdir / "train").glob("*.parquet")
    (test_shard,) = (vdir / "test").glob("*.parquet")
    shutil.copyfile(test_shard, train_shard)  # test text where train should be
    assert run_cli(augment_main, [str(corpus)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(train_shard) in err and "sha256" in err
    assert not (vdir / "augmented").exists()
    with pytest.raises(DataError, match="sha256"):
        open_snapshot(corpus).records("train")
    assert lm_cli(train_main, ["--corpus", str(corpus), *TINY, "--steps", "2", "--out", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and train_shard.name in err
    # A refresh pins the new version's splits to this one's, so it refuses it too.
    spec = card_spec(tmp_path / "grown", train_lines=70)
    assert run_cli(refresh_main, [str(spec), "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert str(train_shard) in err and "sha256" in err
    assert (corpus / "LATEST").read_text().strip() == vdir.name


def test_an_unlisted_shard_in_a_split_folder_is_refused(built: Path, tmp_path: Path, capsys) -> None:
    corpus, vdir = copy_corpus(built, tmp_path)
    (test_shard,) = (vdir / "test").glob("*.parquet")
    extra = vdir / "train" / "train-extra.parquet"
    shutil.copyfile(test_shard, extra)
    assert run_cli(augment_main, [str(corpus)]) == 1
    assert "train-extra.parquet" in capsys.readouterr().err
    with pytest.raises(DataError, match="does not name"):
        open_snapshot(corpus).records("train")
    extra.unlink()
    assert len(open_snapshot(corpus).records("train")) == json.loads((vdir / "manifest.json").read_text())["splits"]["train"]


def test_a_changed_augmented_shard_is_refused(built: Path, tmp_path: Path) -> None:
    corpus, vdir = copy_corpus(built, tmp_path)
    augment_snapshot(str(corpus))
    folder = vdir / "augmented" / "train"
    assert read_columns(folder, ["id", "text"])  # as published: read, from augmented/train or augmented/
    assert len(read_columns(folder.parent, ["id"])) == len(read_columns(folder, ["id"]))
    (shard,) = folder.glob("*.parquet")
    (test_shard,) = (vdir / "test").glob("*.parquet")
    shutil.copyfile(test_shard, shard)
    for where in (folder, folder.parent):
        with pytest.raises(DataError, match="sha256"):
            read_columns(where, ["id", "text"])


def test_augment_of_a_locked_corpus_exits_75(built: Path, tmp_path: Path, capsys) -> None:
    corpus, vdir = copy_corpus(built, tmp_path)
    with CorpusLock(corpus):  # as a build or refresh holds it
        assert run_cli(augment_main, [str(corpus)]) == 75
    assert "try again later" in capsys.readouterr().err
    assert not (vdir / "augmented").exists()
