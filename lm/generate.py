"""`python -m lm.generate MODEL --prompt TEXT [--max-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S]`

Samples a continuation of the prompt one token at a time. MODEL is a run folder or an export
(`python -m lm.ship.export`: `hf` or `int8`). With a key/value cache (the default) the prompt is read
in one pass and each new token costs one position (`lm.decode`; a Hugging Face export uses
transformers' cache); `--no-kv-cache` recomputes the last `context` tokens for every token.
Temperature 0 is greedy. Top-k keeps the k most likely tokens, top-p the smallest set whose
probability reaches p; both apply after the temperature. The same seed gives the same text.
Prints the prompt and its continuation; stops at the end-of-sequence token or after `--max-tokens`.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from lm.files import enable_compile_cache
from lm.errors import UsageError, run_cli
from lm.loader import LanguageModel, load_model
from lm.sampling import sample_next


def generate_ids(model: LanguageModel, prompt: str, max_tokens: int = 200, temperature: float = 0.8,
                 top_k: int = 0, top_p: float = 1.0, seed: int = 0, kv_cache: bool = True,
                 stop_at_eos: bool = True) -> list[int]:
    """The token ids of the continuation of `prompt` (without the prompt)."""
    if max_tokens < 0 or not 0 < top_p <= 1 or top_k < 0:
        raise UsageError("need --max-tokens >= 0, --top-k >= 0 and 0 < --top-p <= 1")
    rng = np.random.default_rng(seed)
    eos = model.tokenizer.eos_id
    tokens = [eos] + model.tokenizer.encode(prompt)
    decoder = model.decoder() if kv_cache else None
    new: list[int] = []
    for i in range(max_tokens):
        if decoder is None:
            logits = model.next_logits(np.asarray(tokens[-model.context:]))
        else:
            logits = decoder.start(tokens) if i == 0 else decoder.step(tokens[-1])
        nxt = sample_next(logits, rng, temperature, top_k, top_p)
        if nxt == eos and stop_at_eos:
            break
        tokens.append(nxt)
        new.append(nxt)
    return new


def generate(model: LanguageModel, prompt: str, max_tokens: int = 200, temperature: float = 0.8,
             top_k: int = 0, top_p: float = 1.0, seed: int = 0, kv_cache: bool = True) -> str:
    """The continuation of `prompt` (without the prompt)."""
    return model.tokenizer.decode(generate_ids(model, prompt, max_tokens, temperature, top_k, top_p, seed, kv_cache))


MIN_TEMPERATURE = 1e-3  # below this (but above 0: greedy) logits / T overflow; use 0 for greedy


def check_args(args: argparse.Namespace) -> None:
    """Every value checked before the model loads: a usage error names the option."""
    t = args.temperature
    if not (t == 0 or MIN_TEMPERATURE <= t <= 100):  # NaN fails both
        raise UsageError(f"--temperature must be 0 (greedy) or in [{MIN_TEMPERATURE}, 100], not {t}")
    if not 0 < args.top_p <= 1:
        raise UsageError(f"--top-p must be in (0, 1], not {args.top_p}")
    for name in ("seed", "top_k", "max_tokens"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 0, not {getattr(args, name)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m lm.generate", description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a run folder (python -m lm.train --out RUN) or an export (python -m lm.ship.export)")
    p.add_argument("--prompt", default="", help="text to continue (default: start of a document)")
    p.add_argument("--max-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=0, help="0: off")
    p.add_argument("--top-p", type=float, default=1.0, help="1: off")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", default="best", choices=("best", "last"))
    p.add_argument("--no-kv-cache", action="store_true", help="recompute the whole window for every token")
    args = p.parse_args(argv)
    check_args(args)
    enable_compile_cache()
    model = load_model(args.model, args.checkpoint)
    text = generate(model, args.prompt, args.max_tokens, args.temperature, args.top_k, args.top_p, args.seed,
                    not args.no_kv_cache)
    sys.stdout.write(args.prompt + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
