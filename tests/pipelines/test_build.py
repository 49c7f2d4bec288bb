"""The corpus build on real gl-ctg and Tiny Shakespeare text: accounting, splits, determinism."""
from __future__ import annotations

import math
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import datasets
import pytest

from pipelines.build import build, main as build_main
from pipelines.errors import run_cli
from pipelines.normalise import normalise_text
from pipelines.spec import load_spec

from tests.helpers import (ROOT, SHAKESPEARE, SHARED, SPLITS, check_accounting, gl_lines, read_rejected,
                           read_split, sources_toml, tree_digest, write_spec)


@pytest.fixture(scope="module")
def gl_build(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("gl")
    return build(load_spec(ROOT / "corpora" / "gl-ctg.toml"), str(out), mirror=str(SHARED))


def test_gl_ctg_accounting_and_latest(gl_build: dict) -> None:
    version_dir = Path(gl_build["path"])
    stats = gl_build["stats"]
    check_accounting(stats, version_dir)
    assert (version_dir.parent / "LATEST").read_text().strip() == gl_build["version"]
    # Every line of the three files is accounted for.
    assert stats["input"] == sum(len(gl_lines(s)) for s in SPLITS)
    assert stats["kept"] > 0.99 * stats["input"]
    for name in SPLITS:
        assert stats["sources"][name]["input"] == len(gl_lines(name))
    manifest = (version_dir / "manifest.json").read_text()
    for row in ("7e9c8941a88d2aae", "e43246996f63c9e5", "69d98d55f1b41c24"):
        assert row in manifest
    assert "\n---\n# gl-ctg (" in (version_dir / "README.md").read_text()  # front matter, then the card
    # What near dedup moved: every record it saw once as a signature and once per band, and
    # (gl-ctg has near-copies) some signatures to the buckets they share.
    moved = stats["near_dedup_shuffle"]
    seen = stats["kept"] + stats["stages"]["near_dedup"]["near_duplicate"]
    assert moved["signatures"] == seen and moved["band_entries"] == 14 * seen
    assert 0 < moved["bucket_members"] < seen


def test_gl_ctg_no_id_in_two_splits_and_source_splits_kept(gl_build: dict) -> None:
    version_dir = Path(gl_build["path"])
    ids = {s: {r["id"] for r in read_split(version_dir, s)} for s in SPLITS}
    assert not ids["train"] & ids["dev"] and not ids["train"] & ids["test"] and not ids["dev"] & ids["test"]
    test_text = {normalise_text(t) for t in gl_lines("test")}
    assert all(r["text"] in test_text for r in read_split(version_dir, "test"))
    # Reading order survives: train rows are in file order.
    poses = [r["pos"] for r in read_split(version_dir, "train")]
    assert poses == sorted(poses)


def char_shingles(text: str, n: int) -> frozenset[str]:
    """Character n-grams as pipelines/dedup.py defines them, written again in plain Python: the
    lower-cased text with every run of characters that are neither word characters (letters,
    digits, `_`) nor spaces turned into a space, words joined by single spaces; a text of at most
    n characters is one shingle."""
    kept = "".join(c if c.isalnum() or c == "_" or c.isspace() else " " for c in text.lower())
    joined = " ".join(kept.split())
    if len(joined) <= n:
        return frozenset([joined])
    return frozenset(joined[i:i + n] for i in range(len(joined) - n + 1))


def near_pairs(a: list[frozenset[str]], b: list[frozenset[str]], threshold: float) -> list[tuple[float, int, int]]:
    """Every (Jaccard, i, j) with J(a[i], b[j]) >= threshold, exactly.

    An inverted index from shingle to the records of `b` holding it, over each record's rarest
    shingles only (prefix filtering): with shingles ordered rarest first, two sets with Jaccard
    >= t share one of the first |x| - ceil(t * |x|) + 1 shingles of each, so no pair at or above
    the threshold is missed and Jaccard is computed only for pairs sharing such a shingle."""
    freq: Counter[str] = Counter(g for s in a + b for g in s)

    def prefix(s: frozenset[str]) -> list[str]:
        ordered = sorted(s, key=lambda g: (freq[g], g))
        return ordered[:len(s) - math.ceil(threshold * len(s) - 1e-9) + 1]

    index: dict[str, list[int]] = defaultdict(list)
    for j, s in enumerate(b):
        for g in prefix(s):
            index[g].append(j)
    found = []
    for i, s in enumerate(a):
        for j in sorted({j for g in prefix(s) for j in index.get(g, ())}):
            if threshold * len(s) <= len(b[j]) * (1 + 1e-9) and threshold * len(b[j]) <= len(s) * (1 + 1e-9):
                shared = len(s & b[j])  # J <= min/max of the sizes: a pair failing that cannot reach t
                jaccard = shared / (len(s) + len(b[j]) - shared)
                if jaccard >= threshold:
                    found.append((jaccard, i, j))
    return found


def test_near_pairs_finds_what_brute_force_finds() -> None:
    """The prefix-filtered join against every pair, on real lines with planted one-word edits."""
    lines = gl_lines("dev", 150)
    edited = [" ".join(w[::-1] + "s" if k == len(line.split()) // 2 else w for k, w in enumerate(line.split()))
              for line in lines[:40]]
    a = [char_shingles(t, 5) for t in lines]
    b = [char_shingles(t, 5) for t in edited + gl_lines("test", 110)]
    brute = sorted((len(x & y) / len(x | y), i, j) for i, x in enumerate(a) for j, y in enumerate(b)
                   if len(x & y) / len(x | y) >= 0.7)
    assert len(brute) >= 20 and sorted(near_pairs(a, b, 0.7)) == brute


def test_connected_components_match_a_graph_search() -> None:
    """Every node maps to the smallest id of its component, as a breadth-first search finds them,
    on a graph of real record ids with chains, stars and repeated edges."""
    import random

    from pipelines.lsh import connected_components
    from pipelines.records import record_id

    ids = [record_id(t) for t in gl_lines("dev", 300)]
    rng = random.Random(3)
    edges = [(rng.choice(ids), rng.choice(ids)) for _ in range(240)] + [(ids[k], ids[k + 1]) for k in range(40)]
    edges += edges[:30]
    graph: dict[str, set[str]] = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
        graph[b].add(a)
    expected: dict[str, str] = {}
    for start in graph:
        if start not in expected:
            seen, todo = {start}, [start]
            while todo:
                todo += [n for n in graph[todo.pop()] if n not in seen and not seen.add(n)]
            expected.update(dict.fromkeys(seen, min(seen)))
    found = connected_components([a for a, _ in edges], [b for _, b in edges])
    assert found == expected and len(set(found.values())) < len(found) // 2
    assert connected_components([], []) == {}


def test_gl_ctg_no_near_duplicates_across_splits(gl_build: dict) -> None:
    """Exact character 5-gram Jaccard over every pair of splits: none at or above the spec's threshold."""
    dedup = load_spec(ROOT / "corpora" / "gl-ctg.toml").dedup
    assert (dedup.ngram, dedup.shingle) == (5, "char")
    version_dir = Path(gl_build["path"])
    texts = {s: [r["text"] for r in read_split(version_dir, s)] for s in SPLITS}
    grams = {s: [char_shingles(t, dedup.ngram) for t in texts[s]] for s in SPLITS}
    leaks = [(round(jac, 3), x, texts[x][i], y, texts[y][j])
             for x, y in (("train", "dev"), ("train", "test"), ("dev", "test"))
             for jac, i, j in near_pairs(grams[x], grams[y], dedup.threshold)]
    assert not leaks, f"{len(leaks)} cross-split pairs at Jaccard >= {dedup.threshold}: {sorted(leaks)[-5:]}"


def test_every_split_loads_with_datasets(gl_build: dict, tmp_path: Path) -> None:
    version_dir = Path(gl_build["path"])
    for split in SPLITS:
        (ds,) = datasets.load_dataset("parquet", data_dir=str(version_dir / split), cache_dir=str(tmp_path / "hf")).values()
        assert len(ds) == gl_build["stats"]["splits"][split]
        assert ds.column_names[:6] == ["id", "text", "source", "doc", "pos", "lang"]
    # The whole snapshot loads too: datasets reads the shard names as train/validation/test.
    whole = datasets.load_dataset("parquet", data_dir=str(version_dir), cache_dir=str(tmp_path / "hf"))
    assert {k: len(v) for k, v in whole.items()} == {
        "train": gl_build["stats"]["splits"]["train"], "validation": gl_build["stats"]["splits"]["dev"],
        "test": gl_build["stats"]["splits"]["test"]}


def test_same_input_gives_identical_bytes_in_both_running_modes(gl_build: dict, tmp_path: Path) -> None:
    spec = load_spec(ROOT / "corpora" / "gl-ctg.toml")
    again = build(spec, str(tmp_path / "a"), mirror=str(SHARED))
    multi = build(spec, str(tmp_path / "b"), mirror=str(SHARED),
                  beam_args=["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    assert again["version"] == multi["version"] == gl_build["version"]
    reference = tree_digest(Path(gl_build["path"]))
    assert tree_digest(Path(again["path"])) == reference
    assert tree_digest(Path(multi["path"])) == reference


def test_rebuild_keeps_published_version(gl_build: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(Path(gl_build["path"]).parent, out / "gl-ctg")
    result = build(load_spec(ROOT / "corpora" / "gl-ctg.toml"), str(out), mirror=str(SHARED))
    assert result["version"] == gl_build["version"]
    assert not [p for p in (out / "gl-ctg").iterdir() if p.name.startswith(".staging")]


@pytest.mark.parametrize("near", ["drop", "keep"])
def test_planted_near_duplicate_lands_in_one_split(tmp_path: Path, near: str) -> None:
    test_lines = gl_lines("test", 60)
    original = test_lines[10]
    words = original.split()
    words[len(words) // 2] = words[len(words) // 2].upper() + "s"  # a one-word edit
    planted = " ".join(words)
    (tmp_path / "train.txt").write_text("\n".join(gl_lines("train", 150) + [planted]) + "\n", encoding="utf-8")
    (tmp_path / "test.txt").write_text("\n".join(test_lines) + "\n", encoding="utf-8")
    sources = sources_toml(*({"path": f"{s}.txt", "format": "lines", "split": s} for s in ("train", "test")))
    spec = write_spec(tmp_path, f'\n{sources}[split]\nmethod = "source"\n[dedup]\nnear = "{near}"\n')
    result = build(load_spec(spec), str(tmp_path / "out"))
    version_dir = Path(result["path"])
    check_accounting(result["stats"], version_dir)
    train = {r["text"] for r in read_split(version_dir, "train")}
    test = {r["text"] for r in read_split(version_dir, "test")}
    assert planted not in train and original in test
    if near == "keep":
        assert planted in test
    else:
        dup = [r for r in read_rejected(version_dir) if r["reason"] == "near_duplicate"]
        assert any(r["snippet"] == planted[:200] and r["source"] == "train" for r in dup)


def test_hash_split_is_stable_and_exact_duplicates_go_once(tmp_path: Path) -> None:
    lines = gl_lines("train", 300)
    (tmp_path / "a.txt").write_text("\n".join(lines + lines[:20]) + "\n", encoding="utf-8")
    spec = write_spec(tmp_path, '[[sources]]\npath = "a.txt"\nformat = "lines"\n[split]\nmethod = "hash"\ndev = 0.1\ntest = 0.1\n')
    result = build(load_spec(spec), str(tmp_path / "out"))
    version_dir = Path(result["path"])
    check_accounting(result["stats"], version_dir)
    assert result["stats"]["stages"]["exact_dedup"]["exact_duplicate"] >= 20
    split_of = {r["id"]: s for s in SPLITS for r in read_split(version_dir, s)}
    assert 10 < sum(1 for s in split_of.values() if s == "test") < 60
    # Growing the corpus never moves an existing sentence.
    (tmp_path / "a.txt").write_text("\n".join(lines + gl_lines("dev", 50)) + "\n", encoding="utf-8")
    grown = build(load_spec(spec), str(tmp_path / "out"))
    split_after = {r["id"]: s for s in SPLITS for r in read_split(Path(grown["path"]), s)}
    assert grown["version"] != result["version"]
    assert all(split_after[i] == s for i, s in split_of.items() if i in split_after)


def test_tinyshakespeare_tail_split_is_the_published_validation_text(tmp_path: Path, capsys) -> None:
    code = run_cli(build_main, [str(ROOT / "corpora" / "tinyshakespeare.toml"), "--out", str(tmp_path), "--mirror", str(SHARED)])
    assert code == 0
    assert "input" in capsys.readouterr().out
    version_dir = tmp_path / "tinyshakespeare" / (tmp_path / "tinyshakespeare" / "LATEST").read_text().strip()
    data = SHAKESPEARE.read_text(encoding="utf-8")
    n = len(data)
    join = lambda split: "\n\n".join(r["text"] for r in read_split(version_dir, split))
    assert join("test") == data[int(n * 0.9):].strip()
    assert join("dev") == data[int(n * 0.85):int(n * 0.9)].strip()
    assert join("train").startswith("First Citizen:\nBefore we proceed any further, hear me speak.")


def test_code_hash_covers_every_pipelines_source_file(tmp_path: Path, monkeypatch) -> None:
    """A change to any .py file under pipelines/, sub-folders too, is a new code hash (a new version)."""
    import pipelines
    from pipelines.snapshot import code_sha256

    assert len(code_sha256()) == 64
    (tmp_path / "sub").mkdir()
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "sub" / "stage.py").write_text("A = 1\n")
    monkeypatch.setattr(pipelines, "__file__", str(tmp_path / "__init__.py"))
    before = code_sha256()
    (tmp_path / "sub" / "stage.py").write_text("A = 2\n")
    after = code_sha256()
    assert after != before
    (tmp_path / "sub" / "notes.txt").write_text("not code")
    assert code_sha256() == after


def repeated_text(segment: int, copies: int, segments: int, words: int) -> str:
    """`words` distinct five-letter words, `segments` runs of `segment` of them each written
    `copies` times, every copy between distinct filler words (so no other n-gram repeats)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    pool = iter("v" + letters[i // 17576 % 26] + letters[i // 676 % 26] + letters[i // 26 % 26] + letters[i % 26]
                for i in range(10_000))
    runs = [[next(pool) for _ in range(segment)] for _ in range(segments)]
    out: list[str] = []
    for run in runs:
        for _ in range(copies):
            out += run + [next(pool)]
    out += [next(pool) for _ in range(words - len(out))]
    assert len(out) == words
    return " ".join(out)


@pytest.mark.parametrize("text, reason", [
    ("Ola, si.", "too_short"),
    ("palabra " * 1300, "too_long"),
    ("Hidroxicloroquina.", "too_few_words"),
    ("<<>> ==== ++++ a b c", "symbol_ratio"),
    ("1995 1996 1997 1998 1999 2000", "digit_ratio"),
    ("1,2 - 3,4 - 5,6 e 7,8", "alpha_ratio"),
    (repeated_text(2, 7, 1, 60), "top_2gram"),
    (repeated_text(3, 4, 1, 60), "top_3gram"),
    (repeated_text(4, 3, 1, 60), "top_4gram"),
    (repeated_text(10, 2, 1, 60), "dup_5gram"),
    (repeated_text(6, 2, 2, 70), "dup_6gram"),
    (repeated_text(7, 2, 2, 90), "dup_7gram"),
    (repeated_text(8, 2, 1, 60), "dup_8gram"),
    (repeated_text(9, 2, 1, 70), "dup_9gram"),
    (repeated_text(10, 2, 1, 90), "dup_10gram"),
    (repeated_text(10, 1, 1, 90), None),  # the same words, nothing repeated
    (" ".join(gl_lines("train", 6)), None),  # real prose, over 50 words
])
def test_quality_reason_each_rule(text: str, reason: str | None) -> None:
    """Every quality rule, under the default thresholds, is the first one its crafted text breaks."""
    from pipelines.quality import quality_reason
    from pipelines.spec import FilterSpec

    assert quality_reason(text, FilterSpec()) == reason
    assert quality_reason(text, FilterSpec(enabled=False)) is None


ENGLISH = [
    "The committee will publish its annual report on the national economy next week.",
    "Most of the patients in the study recovered fully within three months of treatment.",
    "Farmers in the northern valleys have switched to crops that need much less water.",
    "The court ruled that the contract was void because neither party had signed it.",
]
CRAFTED = {"Ola, si.": "too_short", "Hidroxicloroquina.": "too_few_words", "<<>> ==== ++++ a b c": "symbol_ratio",
           "1995 1996 1997 1998 1999 2000": "digit_ratio", repeated_text(3, 4, 1, 60): "top_3gram"}


@pytest.mark.parametrize("action", ["reject", "flag"])
def test_langid_action_and_quality_reasons_in_a_build(tmp_path: Path, action: str) -> None:
    """[langid] action = reject: English lines are rejected as wrong_language with the predicted
    language; flag: kept, `lang` set to it. Crafted lines end in rejected/ with their quality reason."""
    gl = gl_lines("train", 30)
    (tmp_path / "mixed.txt").write_text("\n".join(gl + ENGLISH + list(CRAFTED)) + "\n", encoding="utf-8")
    spec = write_spec(tmp_path, f'[[sources]]\npath = "mixed.txt"\nformat = "lines"\n[langid]\naction = "{action}"\n'
                                '[dedup]\nnear = "off"\n')
    result = build(load_spec(spec), str(tmp_path / "out"))
    version_dir = Path(result["path"])
    check_accounting(result["stats"], version_dir)
    kept = {r["text"]: r for s in SPLITS for r in read_split(version_dir, s)}
    rejected = {r["snippet"]: r for r in read_rejected(version_dir)}
    assert all(line in kept and kept[line]["lang"] == "gl" for line in gl)
    for line in ENGLISH:
        if action == "reject":
            r = rejected[line]
            assert (r["stage"], r["reason"], r["predicted"]) == ("langid", "wrong_language", "en") and r["score"] < 0.5
        else:
            assert kept[line]["lang"] == "en" and kept[line]["lang_score"] < 0.5
    if action == "flag":  # nothing stops at langid, so every crafted line reaches the quality filter
        assert {t[:200]: rejected[t[:200]]["reason"] for t in CRAFTED} == {t[:200]: r for t, r in CRAFTED.items()}
        assert all(rejected[t[:200]]["stage"] == "quality" for t in CRAFTED)
        assert result["stats"]["stages"]["quality"] == {r: 1 for r in CRAFTED.values()}
        assert "langid" not in result["stats"]["stages"]
