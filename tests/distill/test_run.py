"""`python -m lm.distill` end to end with the tiny preset on a small real gl-ctg snapshot augmented
by noise and MyThes synonyms: the report with paired seeds, the cross-fitted judges' filter (no
judge scores what it trained on, checked by id), rounds, an interrupted run that resumes without
retraining finished models, `--teacher RUN` provenance, and a tiny random Hugging Face Llama
teacher with its own tokenizer (sequence-level distillation)."""
from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.helpers import SYNONYMS_AND_NOISE, augmented_gl, gl_lines, read_split
from lm.checkpoint import Checkpoints, RESUME_DIR
from lm.distill import main as distill_main
from lm.corpus import open_snapshot
from lm.distill.judge import LeakError, score
from lm.errors import run_cli
from lm.train import main as train_main

MODELS = ("teacher", "student", "baseline", "student_no_kd", "student_no_aug")
FIELDS = {"params", "dev_bits_per_char", "test_bits_per_char", "train_seconds", "tokens_per_second"}
ARM_FIELDS = FIELDS | {"dev_sd", "test_sd", "seeds", "per_seed"}
RUN_ARGS = ["--preset", "tiny", "--rounds", "2", "--seeds", "2", "--ablations", "--quiet", "--cache", "always",
            "--noised-input", "--keep-quantile", "0.9",
            # the loss options, each away from its default: test_loss_options_reach_every_kd_student
            "--kl", "reverse", "--top-k", "8", "--tail", "renorm", "--temperature", "2"]
AUGMENT = "\n[augment]\nseed = 13\n" + SYNONYMS_AND_NOISE + """[augment.teacher_sample]
samples = 30
temperature = 0.7
top_p = 0.9
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return augmented_gl(tmp_path_factory.mktemp("distill-corpus"), (300, 60, 60), AUGMENT, "gldistill")


def stamp(path: Path) -> tuple[int, bytes]:
    return path.stat().st_mtime_ns, path.read_bytes()


@pytest.fixture(scope="module")
def run(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A two-round tiny run with two paired seeds and the ablations, interrupted once inside
    `baseline-s0` (after its first checkpoint), then re-run with the same command. Returns the run
    folder and what the first attempt left."""
    out = tmp_path_factory.mktemp("distill-run") / "run"
    args = ["--corpus", str(corpus), "--out", str(out), *RUN_ARGS]
    mp = pytest.MonkeyPatch()
    original = Checkpoints.save

    def save_then_die(self, which, step, arrays, meta):
        original(self, which, step, arrays, meta)
        if which == RESUME_DIR and self.run_dir.name == "baseline-s0":
            raise KeyboardInterrupt  # the machine goes down right after the baseline's first checkpoint
    mp.setattr(Checkpoints, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        distill_main(args)
    mp.undo()
    models = out / "models"
    finished = {p.parent.name: stamp(p) for p in models.glob("*/DONE.json")}
    metrics = {p.parent.name: stamp(p) for p in models.glob("*/metrics.jsonl")}
    judges = {p.name: stamp(p) for p in (out / "judge").glob("*")}
    baseline_step = Checkpoints(models / "baseline-s0", read_only=True).latest_step()
    assert run_cli(distill_main, args) == 0
    return {"out": out, "finished": finished, "metrics": metrics, "judges": judges, "baseline_step": baseline_step}


def test_interrupted_run_resumes_without_retraining_finished_models(run: dict) -> None:
    models = run["out"] / "models"
    # finished before the interruption: the teacher, both rounds, the first student seed; the
    # judges (n-grams, no model folder) and their real samples' scores are read back, not redone
    assert {"teacher", "teacher_ngram", "student-r1", "student-r2", "student-s0"} <= set(run["finished"])
    assert not list(models.glob("judge-*"))
    assert {"judge-a.json", "judge-b.json", "real_bpc-judge-a.npy", "real_bpc-judge-b.npy"} <= set(run["judges"])
    for name, before in run["judges"].items():
        assert stamp(run["out"] / "judge" / name) == before, f"{name} was written again"
    assert "baseline-s0" not in run["finished"] and run["baseline_step"] == 8
    for name, before in run["finished"].items():
        assert stamp(models / name / "DONE.json") == before, f"{name} was trained or evaluated again"
        if name != "teacher_ngram":  # chosen on dev, not trained: no metrics
            assert stamp(models / name / "metrics.jsonl") == run["metrics"][name]
    # the baseline went on from its checkpoint: its metrics gained the second half only
    lines = [json.loads(x) for x in (models / "baseline-s0" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "dev_bpc" in x] == [8, 16]
    assert json.loads((models / "baseline-s0" / "DONE.json").read_text())["steps"] == 16
    # a third run has nothing left to do
    again = {p.parent.name: stamp(p) for p in models.glob("*/DONE.json")}
    corpus = json.loads((run["out"] / "distill.json").read_text())["corpus"]
    assert distill_main(["--corpus", corpus, "--out", str(run["out"]), *RUN_ARGS]) == 0
    assert {p.parent.name: stamp(p) for p in models.glob("*/DONE.json")} == again


def test_resumed_baseline_equals_an_uninterrupted_one(run: dict, tmp_path: Path) -> None:
    """Guards resume inside `lm.distill`: `baseline-s0`, interrupted after its first checkpoint and
    resumed by the re-run, ends with the parameters and optimiser state, bitwise, of the same
    model trained straight through (rebuilt from its run.json, the run's tokenizer and snapshot)."""
    import orbax.checkpoint as ocp
    from lm.data import Batches, real_pool
    from lm.distill.config import Settings
    from lm.model import ModelConfig
    from lm.tokenizer import Tokenizer
    from lm.trainer import LoopConfig, OptimConfig, train

    out = run["out"]
    info = json.loads((out / "models" / "baseline-s0" / "run.json").read_text())
    assert info["distill"]["teacher"] == "ce" and info["steps"] == 16
    pre = Settings(**json.loads((out / "distill.json").read_text()))
    snap = open_snapshot(json.loads((out / "distill.json").read_text())["corpus"])
    cfg, t = ModelConfig(**info["model"]), info["train"]
    real = real_pool(Tokenizer.load(out / "tokenizer.model"), snap.documents("train"), cfg.context, None)
    every = min(pre.eval_every, info["steps"])
    train(tmp_path, cfg, OptimConfig(**t["optim"]),
          LoopConfig(steps=info["steps"], batch=t["batch"], eval_every=every, save_every=every, quiet=True),
          Batches(real, t["batch"], t["seed"]), None, seed=t["seed"])
    ck = ocp.StandardCheckpointer()
    resumed = ck.restore((out / "models" / "baseline-s0" / "checkpoints" / "16" / "state").resolve())
    straight = ck.restore((tmp_path / "checkpoints" / "16" / "state").resolve())
    assert jax.tree.structure(resumed) == jax.tree.structure(straight)
    for x, y in zip(jax.tree.leaves(resumed), jax.tree.leaves(straight), strict=True):
        assert np.array_equal(np.asarray(x), np.asarray(y))


def test_loss_options_reach_every_kd_student(run: dict) -> None:
    """Guards `--kl`, `--top-k`, `--tail` and `--temperature` (in RUN_ARGS, each away from its
    default): they are the run's settings, every KD student's loss (its run.json; CE arms: alpha
    1, no teacher), the cache's K and T, and the report's. (`--compare-tail`:
    test_our_run_as_teacher_is_recorded_and_never_judges.)"""
    out = run["out"]
    settings = json.loads((out / "distill.json").read_text())
    assert {k: settings[k] for k in ("kl", "top_k", "tail", "temperature")} == \
        {"kl": "reverse", "top_k": 8, "tail": "renorm", "temperature": 2.0}
    want = {"teacher": "cached", "alpha": 0.2, "temperature": 2.0, "kl": "reverse", "top_k": 8, "tail": "renorm"}
    for name in ("student-r1", "student-r2", "student-s0", "student-s1", "student_no_aug-s0", "student_no_aug-s1"):
        loss = json.loads((out / "models" / name / "run.json").read_text())["distill"]
        assert {k: loss[k] for k in want} == want, name
    for name in ("baseline-s0", "baseline-s1", "student_no_kd-s0", "student_no_kd-s1"):
        loss = json.loads((out / "models" / name / "run.json").read_text())["distill"]
        assert loss["teacher"] == "ce" and loss["alpha"] == 1.0, name
    meta = json.loads((out / "teacher-cache" / "meta.json").read_text())
    assert meta and all(m["k"] == 8 and m["temperature"] == 2.0 for m in meta.values())
    report = json.loads((out / "report.json").read_text())
    assert report["teacher_logits"] == "top-8 cache (renorm)" and report["teacher_cache"]["k"] == 8


def test_report_has_every_field_and_the_paired_intervals(run: dict) -> None:
    out = run["out"]
    report = json.loads((out / "report.json").read_text())
    assert {"corpus", "version", "preset", "rounds", "models", "augmenters", "paired", "samples"} <= set(report)
    assert report["corpus"] == "gldistill" and report["preset"] == "tiny" and len(report["version"]) == 12
    assert set(MODELS) <= set(report["models"])
    teacher_fields = FIELDS | {"steps", "best_step"}
    for name in MODELS:
        m = report["models"][name]
        assert set(m) == (teacher_fields if name == "teacher" else ARM_FIELDS), name
        assert m["params"] > 0 and m["train_seconds"] > 0 and m["tokens_per_second"] > 0
        assert 0 < m["dev_bits_per_char"] < 20 and 0 < m["test_bits_per_char"] < 20
    assert report["models"]["teacher"]["params"] >= 3 * report["models"]["student"]["params"]
    # arms: the mean of their two seeds; pairs: the seed's difference and its t-interval
    student, baseline = report["models"]["student"], report["models"]["baseline"]
    tests = [x["test_bits_per_char"] for x in student["per_seed"]]
    assert student["seeds"] == 2 and student["test_bits_per_char"] == pytest.approx(np.mean(tests), abs=1e-6)
    assert student["test_sd"] == pytest.approx(np.std(tests, ddof=1), abs=1e-6)
    assert [x["seed"] for x in student["per_seed"]] == [x["seed"] for x in baseline["per_seed"]] == [0, 1]
    pair = report["paired"]["student_vs_baseline"]
    diffs = [a - b for a, b in zip(tests, [x["test_bits_per_char"] for x in baseline["per_seed"]])]
    half = 12.7062 * np.std(diffs, ddof=1) / np.sqrt(2)  # t(0.975, 1 degree of freedom)
    assert pair["seeds"] == 2 and pair["mean"] == pytest.approx(np.mean(diffs), abs=1e-5)
    assert pair["ci95"] == pytest.approx([np.mean(diffs) - half, np.mean(diffs) + half], abs=1e-4)
    assert {"student_vs_student_no_kd", "student_vs_student_no_aug"} <= set(report["paired"])
    md = (out / "report.md").read_text()
    assert f"student - baseline: {pair['mean']:+.3f} bits/char, 95% CI [{pair['ci95'][0]:.3f}" in md
    assert "## Samples from student-s0" in md and len(report["samples"]) >= 2
    # the n-gram continues the same prompts for as many characters; readability beside real test text
    assert [(x["prompt"], len(x["continuation"])) for x in report["ngram_samples"]] == \
        [(x["prompt"], len(x["continuation"])) for x in report["samples"]]
    assert set(report["readability"]) == {"student", "ngram", "real_test"} and "Words found in train or dev" in md
    assert all(0 <= r["share"] <= 1 for r in report["readability"].values() if r["share"] is not None)
    # every model says whether it stopped on dev or was still improving at its last step
    assert report["convergence"] and all(f"{n}-s0 (best step" in md for n in ("student", "baseline"))
    assert all(f"**{x['prompt'].strip()}**" in md for x in report["samples"])
    # the soft targets: the teacher with the token n-gram mixed in (weight chosen on dev), and
    # the arm that learns the teacher alone, paired with the student
    mixed, teacher = report["models"]["teacher_ngram"], report["models"]["teacher"]
    assert 0 <= mixed["teacher_weight"] < 1 and mixed["order"] >= 1
    assert mixed["dev_bits_per_char"] < teacher["dev_bits_per_char"] and "teacher + token n-gram (order" in md
    assert "student_vs_student_no_ngram" in report["paired"]
    for name, ngram_mixed in (("student-s0", True), ("student_no_ngram-s1", False), ("student_no_aug-s0", True),
                              ("baseline-s0", False)):
        assert json.loads((out / "models" / name / "run.json").read_text())["distill"]["ngram"] is ngram_mixed, name
    ngram = report["models"]["ngram"]  # the character n-gram anchor, trained on the same train text
    assert ngram["method"] == "modified-kneser-ney" and ngram["order"] >= 1
    assert 0 < ngram["dev_bits_per_char"] < 20 and 0 < ngram["test_bits_per_char"] < 20
    assert f"n-gram (modified KN, order {ngram['order']})" in md
    assert set(report["augmenters"]) == {"noise", "synonyms", "teacher-sample"}
    for a in report["augmenters"].values():
        assert set(a) == {"variants", "kept", "kept_fraction", "dev_gain", "dropped"} and 0 <= a["kept"] <= a["variants"]
        assert a["kept_fraction"] == pytest.approx(a["kept"] / a["variants"], abs=1e-4)
    assert [r["round"] for r in report["rounds"]] == [1, 2]
    r1, r2 = report["rounds"]
    assert r2["seed"] != r1["seed"] and r2["new_variants"] > 0  # round 2 re-ran pipelines.augment
    for r in report["rounds"]:
        assert {"weights", "gains", "augmenters", "dev_bits_per_char", "test_bits_per_char", "improved"} <= set(r)
        assert sum(r["weights"].values()) == pytest.approx(1.0, abs=1e-3)
    assert r2["weights"] == r1["next_weights"]
    assert report["teacher_cache"]["rows_filled"] > 0
    for name in MODELS + ("noise", "synonyms"):
        assert f"| {name} |" in md
    for png in ("dev_bpc.png", "kept_fraction.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_arms_are_paired_and_trained_after_the_round_is_fixed(run: dict) -> None:
    models = run["out"] / "models"
    report = json.loads((run["out"] / "report.json").read_text())
    best = report["rounds"][report["best_round"] - 1]
    seeds = {}
    for arm in MODELS[1:]:
        for i in (0, 1):
            info = json.loads((models / f"{arm}-s{i}" / "run.json").read_text())
            seeds.setdefault(i, set()).add(info["train"]["seed"])
            done = json.loads((models / f"{arm}-s{i}" / "DONE.json").read_text())
            if arm in ("student", "student_no_kd"):  # the best round's mixture, every seed
                assert done["weights"] == best["weights"] and done["pools"]
    assert seeds == {0: {0}, 1: {1}}  # a pair shares its seed (initialisation, order of real text)
    # every arm has the same number of draws: no round student stands in for an arm
    assert all(r["model"].startswith("student-r") for r in report["rounds"])
    assert not (models / "student-s2").exists() and not (models / "baseline-s2").exists()


def test_judges_never_score_text_they_trained_on(run: dict, tmp_path: Path) -> None:
    """Each judge is the n-gram of real text of its half of train only, and never judges a variant
    of a sentence it counted: shown by the text the n-gram is given, matched against the
    snapshot's splits and augmented shards as read here, not only by the data record it keeps."""
    out = run["out"]
    report = json.loads((out / "report.json").read_text())
    info = {n: json.loads((out / "judge" / f"{n}.json").read_text()) for n in ("judge-a", "judge-b")}
    trained = {n: set(i["data"]["records"]) for n, i in info.items()}
    train_ids = {r["id"] for r in open_snapshot(report["settings"]["corpus"]).records("train")}
    assert trained["judge-a"] | trained["judge-b"] == train_ids and not trained["judge-a"] & trained["judge-b"]
    for name, i in info.items():  # the order is dev's best; the report describes the judge
        assert i["method"] == "modified-kneser-ney" and i["order"] == int(np.argmin(i["dev_bits_per_char_by_order"])) + 1
        real = np.load(out / "judge" / f"real_bpc-{name}.npy")
        assert report["judges"][name] == {"method": i["method"], "order": i["order"], "records": len(trained[name]),
                                          "dev_bits_per_char": i["dev_bits_per_char"],
                                          "real_median_bits_per_char": pytest.approx(float(np.nanmedian(real)))}
        assert f"{name} order {i['order']} on {len(trained[name]):,} records" in (out / "report.md").read_text()
    for r in (1, 2):
        rows = pq.read_table(out / "rounds" / f"r{r}" / "judged.parquet").to_pylist()
        assert rows and all(x["parent_id"] not in trained[x["judge"]] for x in rows)  # checked by id
        assert {x["judge"] for x in rows} == {"judge-a", "judge-b"}
        thresholds = report["rounds"][r - 1]
        for name in ("judge-a", "judge-b"):
            real = np.load(out / "judge" / f"real_bpc-{name}.npy")
            t = float(np.quantile(real, 0.9))
            assert all(x["kept"] == (x["bits_per_char"] <= t) for x in rows if x["judge"] == name)
        assert thresholds["threshold_bits_per_char"] > 0
        kept_ids = {x["id"] for x in pq.read_table(out / "rounds" / f"r{r}" / "kept.parquet").to_pylist()}
        assert kept_ids == {x["id"] for x in rows if x["kept"]} and 0 < len(kept_ids) < len(rows)
    # behaviour: the judges again, in a fresh folder with the run's settings, the n-gram replaced by
    # a spy that keeps the text each judge is counted on (the data, not the record of it)
    from lm.distill import judge as judge_module
    from lm.distill.config import Settings
    from lm.distill.workspace import Workspace
    from lm.ngram import CharNgram
    from lm.tokenizer import Tokenizer
    snap = open_snapshot(report["settings"]["corpus"])
    texts = {split: {r["id"]: r["text"] for r in read_split(snap.root, split)} for split in ("train", "dev", "test")}
    train_text = {t: i for i, t in texts["train"].items()}
    held_out = (set(texts["dev"].values()) | set(texts["test"].values())) - set(train_text)
    shards = sorted((snap.root / "augmented").rglob("*.parquet"))  # the snapshot's variants, then later rounds'
    shards += [out / "rounds" / f"r{r}" / "judged.parquet" for r in (1, 2)]
    variants = {t for f in shards for t in pq.read_table(f, columns=["text"])["text"].to_pylist()}
    variants -= set(train_text)
    assert held_out and len(variants) > 100
    given: list[str] = []

    class Spy(CharNgram):
        def __init__(self, text: str, *args, **kw) -> None:
            given.append(text)
            super().__init__(text, *args, **kw)
    settings = Settings(**json.loads((out / "distill.json").read_text()))
    again = Workspace(tmp_path, snap, settings, Tokenizer.load(out / "tokenizer.model"), True, 0.0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(judge_module, "CharNgram", Spy)
        judges = judge_module.train_judges(again)
    assert [j.name for j in judges] == ["judge-a", "judge-b"] and len(given) == 2
    lines: dict[str, set[str]] = {}
    for j, text in zip(judges, given):
        assert (j.order, j.info["data"]) == (info[j.name]["order"], info[j.name]["data"])  # the run's judge
        seen = text.split(snap.separator)
        assert not set(seen) & held_out and not set(seen) & variants  # no dev, test or variant
        assert all(x in train_text for x in seen)  # real train records, whole
        ids = [train_text[x] for x in seen]
        assert len(set(ids)) == len(ids) and set(ids) == trained[j.name]
        lines[j.name] = set(seen)
    for r in (1, 2):  # the run's verdicts: no judge saw the text of a parent it judged
        for x in pq.read_table(out / "rounds" / f"r{r}" / "judged.parquet").to_pylist():
            assert texts["train"][x["parent_id"]] not in lines[x["judge"]]
    # and the guard holds: asked to score its own half, by id, a judge refuses
    judge = judges[0]
    own = sorted(trained["judge-a"])[:3]
    with pytest.raises(LeakError, match="judge-a trained on 3"):
        score(again, judge, ["x"] * 3, own)
    other = sorted(trained["judge-b"])[:3]
    assert np.isfinite(score(again, judge, ["Unha frase.", "Outra.", "E outra máis."], other)).all()


def test_bad_options_are_usage_errors(corpus: Path, tmp_path: Path, capsys) -> None:
    base = ["--corpus", str(corpus), "--out", str(tmp_path / "r"), "--preset", "tiny", "--quiet"]
    assert run_cli(distill_main, base + ["--alpha", "1.5"]) == 2
    assert "--alpha" in capsys.readouterr().err
    assert run_cli(distill_main, base + ["--keep-quantile", "0"]) == 2
    assert run_cli(distill_main, ["--corpus", str(tmp_path / "none"), "--out", str(tmp_path / "r2")]) == 1
    assert "no corpus snapshot" in capsys.readouterr().err
    # A teacher folder that cannot load is refused before any work, as a usage error.
    assert run_cli(distill_main, base + ["--teacher-hf", str(tmp_path)]) == 2
    assert "safetensors" in capsys.readouterr().err


def test_lm_train_refuses_to_resume_a_model_distill_trained(run: dict, corpus: Path, capsys) -> None:
    """`lm.train --out RUN/models/student-s0` used to die in a traceback; it is one usage line now,
    and the model's folder is left as it was (issue 29, item 12)."""
    model = run["out"] / "models" / "student-s0"
    before = stamp(model / "run.json")
    assert run_cli(train_main, ["--corpus", str(corpus), "--out", str(model), "--steps", "500"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lm.distill trained ('student-s0')" in err[0] and "--out" in err[0], err
    assert stamp(model / "run.json") == before


def make_tiny_llama(folder: Path) -> Path:
    """A randomly initialised 2-layer Llama with a byte-level BPE of its own (not our tokenizer)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(gl_lines("train", 500), trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<s>", eos_token="</s>")
    config = LlamaConfig(vocab_size=tk.get_vocab_size(), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return folder


def test_hugging_face_teacher_with_another_tokenizer_distils_by_its_samples(corpus: Path, tmp_path: Path) -> None:
    hf = make_tiny_llama(tmp_path / "llama")
    assert (hf / "model.safetensors").is_file() and not list(hf.glob("*.bin"))
    out = tmp_path / "run"
    assert run_cli(distill_main, ["--corpus", str(corpus), "--out", str(out), "--preset", "tiny", "--seeds", "1",
                                  "--teacher-hf", str(hf), "--keep-quantile", "1.0", "--ablations", "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["teacher_logits"].startswith("sequence-level")
    assert "teacher-sample" in report["augmenters"] and report["augmenters"]["teacher-sample"]["variants"] > 0
    samples = pq.read_table(out / "rounds" / "r1" / "judged.parquet").to_pylist()
    ts = [r for r in samples if r["augmenter"] == "teacher-sample"]
    assert ts and all(np.isfinite(r["bits_per_char"]) for r in ts)  # judged like the rest
    train = {r["id"] for r in pq.read_table(sorted((corpus).glob("*/train"))[0]).to_pylist()}
    assert all(r["parent_id"] in train for r in ts)
    teacher = report["models"]["teacher"]
    assert teacher["params"] > 0 and teacher["train_seconds"] is None  # not trained here
    # the student's tokenizer is ours, not the teacher's
    assert not (out / "models" / "student-s0" / "tokenizer.model").read_bytes().startswith(b"{")
    assert set(MODELS) <= set(report["models"])
    no_aug = json.loads((out / "models" / "student_no_aug-s0" / "DONE.json").read_text())
    no_kd = json.loads((out / "models" / "student_no_kd-s0" / "DONE.json").read_text())
    assert no_aug["pools"] == ["teacher-sample"] and "teacher-sample" not in no_kd["pools"]


def test_our_run_as_teacher_is_recorded_and_never_judges(corpus: Path, tmp_path: Path) -> None:
    """`--teacher RUN` made by lm.train on real plus augmented text: its data is recorded, it never
    judges (cross-fitted judges are trained), and `student_no_aug` is refused: it would learn
    augmented text through the teacher's soft targets. With `--top-k 8 --compare-tail`, the
    teacher's top-k in the step and the other tail's arm, `student_renorm`."""
    teacher = tmp_path / "teacher"
    assert run_cli(train_main, ["--corpus", str(corpus), "--out", str(teacher), "--preset", "tiny", "--dim", "64",
                                "--hidden", "128", "--steps", "6", "--batch", "8", "--augmented", "--quiet"]) == 0
    data = json.loads((teacher / "run.json").read_text())["data"]
    assert data["records"] == "all" and data["splits"] == ["train"] and data["augmented"]["variants"] > 0
    out = tmp_path / "run"
    assert run_cli(distill_main, ["--corpus", str(corpus), "--out", str(out), "--preset", "tiny", "--seeds", "1",
                                  "--teacher", str(teacher), "--ablations", "--cache", "never", "--top-k", "8",
                                  "--compare-tail", "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["teacher_logits"] == "computed in the student's step"
    # --compare-tail with the teacher's top-8 in the step (default tail bucket): student_renorm
    # trains on the same batches from the same start as the student: same first-step CE, not KL
    for arm, tail in (("student", "bucket"), ("student_renorm", "renorm")):
        loss = json.loads((out / "models" / f"{arm}-s0" / "run.json").read_text())["distill"]
        assert (loss["teacher"], loss["top_k"], loss["tail"]) == ("live", 8, tail), arm
    first = [json.loads((out / "models" / f"{arm}-s0" / "metrics.jsonl").read_text().splitlines()[0])
             for arm in ("student", "student_renorm")]
    assert first[0]["step"] == first[1]["step"] == 1 and first[0]["ce"] == first[1]["ce"]
    assert first[0]["kl"] != pytest.approx(first[1]["kl"], rel=1e-3)
    assert "student_renorm" in report["models"] and "student_vs_student_renorm" in report["paired"]
    assert (out / "tokenizer.model").read_bytes() == (teacher / "tokenizer.model").read_bytes()
    assert (out / "judge" / "judge-a.json").is_file() and (out / "judge" / "judge-b.json").is_file()
    assert report["teacher_data"] == data
    assert "augmented variants" in report["refused"]["student_no_aug"]
    assert not (out / "models" / "student_no_aug-s0").exists() and "student_no_aug" not in report["models"]
    assert "student_no_aug not trained" in (out / "report.md").read_text()
    given = json.loads((teacher / "run.json").read_text())["params"]
    assert report["models"]["teacher"]["params"] == given > report["models"]["student"]["params"]
    assert {"student", "baseline", "student_no_kd"} <= set(report["models"])


def test_own_teacher_samples_screened_augmenters_and_study_arms(corpus: Path, tmp_path: Path, monkeypatch) -> None:
    """Our real-text teacher continues real prefixes with the spec's temperature and top-p (an
    augmenter for any language, judged like the rest); an augmenter whose dev gain is not
    positive is dropped from the student's mixture and the report says why; `--study-arms` adds
    the random-filter, unfiltered and one-augmenter arms."""
    from lm.distill import rounds

    real_gains = rounds.dev_gains
    probed: list[list[str]] = []

    def gains(cfg, params, dev, pools, batch, seed):
        got = real_gains(cfg, params, dev, pools, batch, seed)
        probed.append(sorted(got))
        return {k: (-0.05 if k == "noise" else abs(v) + 0.01) for k, v in got.items()}
    monkeypatch.setattr(rounds, "dev_gains", gains)
    out = tmp_path / "run"
    assert run_cli(distill_main, ["--corpus", str(corpus), "--out", str(out), "--preset", "tiny", "--seeds", "1",
                                  "--study-arms", "--quiet"]) == 0
    assert probed and probed[0] == ["noise", "synonyms", "teacher-sample"]
    judged = pq.read_table(out / "rounds" / "r1" / "judged.parquet").to_pylist()
    ts = [r for r in judged if r["augmenter"] == "teacher-sample"]
    train = {r["id"]: r["text"] for r in open_snapshot(corpus).records("train")}
    assert 0 < len(ts) <= 30 and all(r["parent_id"] in train and np.isfinite(r["bits_per_char"]) for r in ts)
    assert all(json.loads(r["params"])["temperature"] == 0.7 and json.loads(r["params"])["top_p"] == 0.9 for r in ts)
    # each sample starts with the first words of its parent and goes on differently
    assert all(r["text"].split(" ")[:3] == train[r["parent_id"]].split(" ")[:3] and r["text"] != train[r["parent_id"]]
               for r in ts)
    report = json.loads((out / "report.json").read_text())
    assert report["augmenters"]["noise"]["dropped"] == "dev gain -0.0500 <= 0 on the teacher"
    assert report["augmenters"]["synonyms"]["dropped"] is None
    assert report["rounds"][0]["dropped"] == {"noise": "dev gain -0.0500 <= 0 on the teacher"}
    assert "augmenter noise dropped from the student's mixture: dev gain -0.0500" in (out / "report.md").read_text()
    done = {n: json.loads((out / "models" / f"{n}-s0" / "DONE.json").read_text())
            for n in ("student", "student_no_kd", "aug_random", "aug_unfiltered", "aug-noise", "aug-teacher-sample")}
    assert done["student"]["pools"] == ["synonyms", "teacher-sample"] and "noise" not in done["student"]["weights"]
    assert done["student_no_kd"]["pools"] == ["synonyms"]  # no teacher: not even its samples
    assert done["aug-noise"]["pools"] == ["noise"] and done["aug-teacher-sample"]["pools"] == ["teacher-sample"]
    # random filter: per augmenter as many variants as the judge kept; unfiltered: every one judged
    kept = {a: sum(1 for r in judged if r["augmenter"] == a and r["kept"]) for a in ("synonyms",)}
    data = {n: json.loads((out / "models" / f"{n}-s0" / "run.json").read_text())["data"]["augmented"]
            for n in ("aug_random", "aug_unfiltered", "student_no_kd")}
    assert data["aug_random"]["variants"] == data["student_no_kd"]["variants"] == kept["synonyms"]
    assert data["aug_unfiltered"]["variants"] == sum(1 for r in judged if r["augmenter"] == "synonyms")
    assert data["aug_random"]["ids_sha256"] != data["student_no_kd"]["ids_sha256"]
