"""A refresh publishes every record of the previous snapshot in the split it was published in,
even where the spec or the sources now say otherwise, so no text leaks between splits across
versions (a model trained on version 1's train is never tested on it in version 2)."""
from __future__ import annotations

from pathlib import Path

from pipelines.records import record_id
from pipelines.refresh import refresh, split_ids
from pipelines.spec import load_spec
from pipelines.split import hash_split
from tests.helpers import gl_lines, gl_split_spec, read_split, write_spec

QUIET = '[langid]\naction = "off"\n'


def published(out: Path, name: str) -> Path:
    corpus = out / name
    return corpus / (corpus / "LATEST").read_text().strip()


def test_new_split_fractions_move_no_published_record(tmp_path: Path) -> None:
    """`hash` split: the fractions change between versions; the old records keep their split,
    only the new ones follow the new fractions."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("\n".join(gl_lines("train", 200)) + "\n", encoding="utf-8")
    body = '[[sources]]\npath = "a.txt"\nformat = "lines"\n' + QUIET
    spec = write_spec(src, body + '[split]\nmethod = "hash"\ndev = 0.1\ntest = 0.1\n', name="fresh")
    out = tmp_path / "out"
    first = refresh(load_spec(spec), str(out))
    assert first["status"] == "published"
    old = split_ids(published(out, "fresh"))
    assert set(old.values()) == {"train", "dev", "test"}
    # would move under the new fractions if the split were computed again
    would_move = {i for i, s in old.items() if hash_split(i, 0.3, 0.3) != s}
    assert len(would_move) > 30
    new_lines = gl_lines("dev", 80)
    with open(src / "a.txt", "a", encoding="utf-8") as f:
        f.write("\n".join(new_lines) + "\n")
    spec.write_text(spec.read_text(encoding="utf-8").replace("dev = 0.1\ntest = 0.1", "dev = 0.3\ntest = 0.3"),
                    encoding="utf-8")
    second = refresh(load_spec(spec), str(out))
    assert second["status"] == "published" and second["previous"] == first["version"]
    new = split_ids(published(out, "fresh"))
    assert {i: new.get(i) for i in old} == old  # every published record, in its split
    added = set(new) - set(old)
    assert len(added) > 50
    assert all(new[i] == hash_split(i, 0.3, 0.3) for i in added)  # the new ones: the new fractions
    # the text itself: each record that would have moved is read from its old split's shards
    version = published(out, "fresh")
    texts = {s: {r["id"]: r["text"] for r in read_split(version, s)} for s in ("train", "dev", "test")}
    assert all(record_id(texts[old[i]][i]) == i for i in would_move)


def test_a_line_moved_to_the_test_source_stays_in_train(tmp_path: Path) -> None:
    """`source` split: train sentences that move from the train file to the test file (and one
    that is now in both) stay in train, where version 1 published them."""
    spec = gl_split_spec(tmp_path / "src", (120, 30, 30), QUIET, "bysource")
    out = tmp_path / "out"
    first = refresh(load_spec(spec), str(out))
    assert first["status"] == "published"
    old = split_ids(published(out, "bysource"))
    train_lines = gl_lines("train", 120)
    moved, copied = train_lines[10:15], train_lines[20]
    assert all(old[record_id(t)] == "train" for t in moved + [copied])
    kept = [t for t in train_lines if t not in moved]
    (tmp_path / "src" / "train.txt").write_text("\n".join(kept) + "\n", encoding="utf-8")
    test_lines = gl_lines("test", 30) + moved + [copied]
    (tmp_path / "src" / "test.txt").write_text("\n".join(test_lines) + "\n", encoding="utf-8")
    second = refresh(load_spec(spec), str(out))
    assert second["status"] == "published" and second["removed"] == 0
    new = split_ids(published(out, "bysource"))
    assert {i: new.get(i) for i in old} == old
    for t in moved + [copied]:
        assert new[record_id(t)] == "train", t
    test_text = {r["text"] for r in read_split(published(out, "bysource"), "test")}
    assert not test_text & set(moved + [copied])  # none of version 1's train text is tested on
