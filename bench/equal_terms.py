"""Tiny Shakespeare on nanoGPT's terms: ours and the PyTorch peer (bench/nanogpt_peer.py) on the
same split, in the same wall time, scored by one harness under two estimators.

* Split: nanoGPT's, train = the first 90% of input.txt, test = the last 10%
  (`corpora/tinyshakespeare-nanogpt.toml`: a `tail` split with no dev). The peer trains on
  exactly that; ours is the snapshot built from that spec.
* Choice of ours: every candidate of CANDIDATES trains on `corpora/tinyshakespeare.toml` (train =
  the first 85%, dev = the 5% before the test tail) with the same wall budget and is scored on
  that dev slice; the lowest dev bits per character wins. Test is never read to choose.
* Ours at equal wall time: `python -m lm.train` on the 90% split, whole command (imports,
  tokenizer, compilation, training, checkpoint) within the peer's measured training wall time;
  a 30-step calibration run sets the step count, and `--max-seconds` guards the budget. The last
  checkpoint is scored (there is no dev: nothing is chosen on test, for either model).
* Estimators, the same for both models: (1) nanoGPT's: the mean loss over N_BLOCKS random
  64-character blocks of the test text (starts fixed by BLOCK_SEED), the context reset at each
  block; a character model predicts characters 2-65 of each 65-character window from the ones
  before, ours the same 64 characters tokenized on their own after an end-of-text token (so ours
  gets no first character of context: never more context than the peer); (2) sliding windows
  over the whole test text: the peer's 64-character windows advance by 32 (every character after
  the first window sees at least 32 characters), ours `lm.evaluate`'s windows of its context in
  tokens advancing by half of it (the characters of context this gives are reported).
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import load_1m, timed_command, wait_for_quiet  # noqa: E402

WORK = ROOT / "bench" / "work" / "equal_terms"
PY = sys.executable
INPUT = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
N_BLOCKS, BLOCK_SEED, BLOCK = 4800, 0, 64  # 400 batches of nanoGPT's 12 blocks
CALIBRATION_STEPS, SAFETY = 30, 0.92
# nanoGPT's README: the CPU "baby GPT" recipe's val loss, as nanoGPT's own estimator prints it (the
# mean loss over eval_iters batches of random val blocks): the peer reproduces it if its figure
# under the same estimator lands within REPRODUCE_TOL
PUBLISHED_VAL, REPRODUCE_TOL = 1.88, 0.03
# Candidates for ours, all 2 data-parallel devices on CPU; chosen on the dev slice (see above).
BASE = ["--preset", "student", "--tokenizer", "bpe", "--batch", "32"]
CANDIDATES = {
    "2x128 bpe1024 ctx32 lr3e-3": BASE + ["--layers", "2", "--vocab-size", "1024", "--context", "32", "--lr", "3e-3"],
    "4x128 bpe1024 ctx32 lr3e-3": BASE + ["--layers", "4", "--vocab-size", "1024", "--context", "32", "--lr", "3e-3"],
    "2x128 bpe512 ctx48 lr3e-3": BASE + ["--layers", "2", "--vocab-size", "512", "--context", "48", "--lr", "3e-3"],
    "2x128 bpe1024 ctx32 lr5e-3": BASE + ["--layers", "2", "--vocab-size", "1024", "--context", "32", "--lr", "5e-3"],
}


def snapshot(spec: str) -> Path:
    out = WORK / "corpora"
    name = spec.removesuffix(".toml")
    corpus = out / name
    if not (corpus / "LATEST").exists():
        timed_command([PY, "-m", "pipelines.build", f"corpora/{spec}", "--out", str(out), "--allow-empty",
                       "--mirror", str(ROOT.parent / "shared" / "data")])
    return corpus


def train_within(corpus: Path, out: Path, args: list[str], budget_s: float) -> dict[str, Any]:
    """`lm.train` with as many steps as fit `budget_s` of wall time for the whole command."""
    def cmd(run: Path, steps: int) -> list[str]:
        return [PY, "-m", "lm.train", "--corpus", str(corpus), "--out", str(run), "--steps", str(steps),
                "--eval-every", str(steps), "--log-every", "10", "--quiet", "--max-seconds", str(budget_s - 6), *args]

    cal = out.with_name(out.name + "-calibrate")
    for folder in (cal, out):
        shutil.rmtree(folder, ignore_errors=True)
    cal_wall, _ = timed_command(cmd(cal, CALIBRATION_STEPS))
    rows = [json.loads(x) for x in (cal / "metrics.jsonl").read_text().splitlines()]
    info = json.loads((cal / "run.json").read_text())
    tokens_per_step = info["train"]["batch"] * info["model"]["context"]
    steps_per_s = statistics.mean(r["tokens_per_s"] for r in rows if "tokens_per_s" in r and r["step"] > 1) / tokens_per_step
    overhead = cal_wall - CALIBRATION_STEPS / steps_per_s
    steps = int((budget_s - overhead) * steps_per_s * SAFETY)
    wall, _ = timed_command(cmd(out, steps))
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    done = [r for r in rows if "tokens_per_s" in r][-1]["step"]
    info = json.loads((out / "run.json").read_text())
    return {"args": args, "steps": steps, "steps_done": done, "wall_s": wall, "budget_s": budget_s,
            "within_budget": wall <= budget_s, "params": info["params"], "calibration_overhead_s": overhead,
            "calibration_steps": CALIBRATION_STEPS}


def evaluate(run: Path, split: str) -> dict[str, Any]:
    _, out = timed_command([PY, "-m", "lm.evaluate", str(run), "--split", split, "--checkpoint", "last", "--json"])
    return json.loads(out)


def block_starts(n_chars: int) -> np.ndarray:
    """nanoGPT's estimator's blocks: N_BLOCKS starts, each with 65 characters after it."""
    return np.random.default_rng(BLOCK_SEED).integers(0, n_chars - BLOCK - 1, N_BLOCKS)


def ours_scores(run: Path, test_text: str) -> dict[str, Any]:
    from lm.loader import load_model
    from lm.scoring import LN2, texts_bits_per_char

    model = load_model(run, "last")
    blocks = [test_text[i + 1:i + 1 + BLOCK] for i in block_starts(len(test_text))]
    bits = texts_bits_per_char(model.nll, model.tokenizer.encode, model.tokenizer.eos_id, blocks, model.context)
    sliding = evaluate(run, "test")
    chars_per_token = sliding["chars"] / sliding["tokens"]
    return {"nanogpt_estimator": float(np.mean(bits) * LN2), "sliding": sliding["nats_per_char"],
            "sliding_stride_tokens": sliding["stride"], "context_tokens": sliding["context"],
            "chars_per_token": chars_per_token,
            "sliding_min_context_chars": (sliding["context"] - sliding["stride"]) * chars_per_token}


class _CharModel:
    """The peer as `lm.scoring.score_stream` reads a model: its context and a batched NLL."""

    def __init__(self, nll: Any, context: int):
        self.nll, self.context = nll, context


def peer_scores(peer: dict[str, Any], test_text: str) -> dict[str, Any]:
    from bench.nanogpt_peer import encode_chars, nll_fn
    from lm.scoring import score_stream

    nll = nll_fn(peer["model"])
    ids = encode_chars(test_text, peer["vocab"])
    starts = block_starts(len(ids))
    losses = []
    for i in range(0, len(starts), 12):  # nanoGPT's batch of 12 blocks
        b = starts[i:i + 12]
        x = np.stack([ids[s:s + BLOCK] for s in b])
        y = np.stack([ids[s + 1:s + 1 + BLOCK] for s in b])
        losses.append(nll(x, y).mean(axis=1))
    context = peer["recipe"].block_size
    total, scored = score_stream(_CharModel(nll, context), ids.astype(np.int32), context // 2)
    return {"nanogpt_estimator": float(np.concatenate(losses).mean()), "sliding": total / scored,
            "sliding_stride_chars": context // 2, "sliding_min_context_chars": context // 2}


def choose_ours(budget_s: float) -> dict[str, Any]:
    """Every candidate on the 85/5 split within `budget_s`; the lowest dev bits per character wins."""
    corpus = snapshot("tinyshakespeare.toml")
    rows = {}
    for name, args in CANDIDATES.items():
        load = wait_for_quiet()
        run = WORK / "choose" / name.replace(" ", "_")
        row = train_within(corpus, run, args, budget_s)
        row["dev_bits_per_char"] = evaluate(run, "dev")["bits_per_char"]
        rows[name] = row | {"load_before": load}
        print(f"  {name}: dev {row['dev_bits_per_char']:.4f} bits/char in {row['wall_s']:.1f} s", flush=True)
    return {"candidates": rows, "chosen": pick(rows), "split": "train = first 85%, dev = the next 5% (tinyshakespeare.toml)"}


def pick(rows: dict[str, dict[str, Any]]) -> str:
    """The candidate with the lowest dev bits per character (test is never scored for the choice)."""
    return min(rows, key=lambda k: rows[k]["dev_bits_per_char"])


def run_equal_terms(threads: int = 2) -> dict[str, Any]:
    """The peer, the choice of ours and ours at the peer's wall time, with both estimators."""
    from bench.nanogpt_peer import train_peer
    from lm.corpus import open_snapshot

    full = INPUT.read_text(encoding="utf-8")
    corpus = snapshot("tinyshakespeare-nanogpt.toml")
    test_text = open_snapshot(corpus).text("test")
    nanogpt_val = full[int(0.9 * len(full)):]
    load = wait_for_quiet()
    peer = train_peer(full, threads=threads, progress=lambda it, loss: print(f"  peer {it}: {loss:.3f}", flush=True))
    peer_row = {"wall_s": peer["wall_s"], "params": peer["params"], "nanogpt_printed_val": peer["nanogpt_val_loss"],
                "recipe": dataclasses.asdict(peer["recipe"]), "load_before": load, **peer_scores(peer, test_text)}
    print(f"  peer: {peer_row['nanogpt_estimator']:.4f} nats/char (nanoGPT's estimator) in {peer['wall_s']:.1f} s", flush=True)
    choice = choose_ours(peer["wall_s"])
    load = wait_for_quiet()
    run = WORK / "ours"
    ours = train_within(corpus, run, CANDIDATES[choice["chosen"]], peer["wall_s"])
    ours_row = {"wall_s": ours["wall_s"], "params": ours["params"], "load_before": load, **ours_scores(run, test_text), "train": ours}
    return {
        "split": {"train_chars": peer["train_chars"], "test_chars": len(test_text),
                  "test_is_nanogpt_val": test_text == nanogpt_val.rstrip("\n"),
                  "spec": "corpora/tinyshakespeare-nanogpt.toml"},
        "estimators": {"nanogpt": {"blocks": N_BLOCKS, "block_chars": BLOCK, "seed": BLOCK_SEED}},
        "peer": peer_row, "ours": ours_row, "choice": choice,
        "published_nanogpt_val": PUBLISHED_VAL, "published_estimator": "nanoGPT's",
        "reproduce_tolerance": REPRODUCE_TOL,
        "reproduced": abs(peer_row["nanogpt_estimator"] - PUBLISHED_VAL) <= REPRODUCE_TOL,
        "load_after": load_1m(), "units": "nats per character",
    }


if __name__ == "__main__":
    print(json.dumps(run_equal_terms(), indent=2, default=lambda o: o if not isinstance(o, float) or math.isfinite(o) else None))
