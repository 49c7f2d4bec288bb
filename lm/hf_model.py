"""A Hugging Face causal LM: scores text and samples continuations.

Loaded from a local folder with `transformers.AutoModelForCausalLM` on PyTorch, safetensors
weights only (`use_safetensors=True`) and never remote code (`trust_remote_code=False`), on the
GPU when there is one, else the CPU (torch and transformers are imported only then).

`HFModel` has the interface of `lm.loader.LanguageModel` (`tokenizer` with `encode`, `decode`,
`eos_id`, `sha256`; `context`; `info`; `nll`; `next_logits`; `decoder`), so `lm.evaluate`,
`lm.generate` and `lm.distill`'s judge use it exactly as they use our own models; `lm.loader`
reads an `lm.ship.export --format hf` folder (or any such folder) with it. It has its own
tokenizer, so as `lm.distill`'s teacher it cannot give our student token-level soft targets: it
teaches by sequence-level distillation (`sample`: its samples become training text) and judges
augmented text in bits per character, which does not depend on the tokenizer.
"""
from __future__ import annotations

import hashlib
import inspect
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lm.errors import CheckpointError, UsageError, first_line
from lm.runtimes import ShiftingDecoder

MAX_CONTEXT = 1024  # scoring windows: long enough for sentences, short enough for a CPU


def folder_problem(path: Path) -> str | None:
    """Why `path` is not a folder HFModel loads (a local folder with safetensors weights); None if it is."""
    if not path.is_dir():
        return "not a folder (a local Hugging Face model folder is expected)"
    if not any(path.glob("*.safetensors")):
        return "no .safetensors weights (only safetensors are loaded, never pickles)"
    return None


class HFTokenizer:
    """A transformers tokenizer behind lm's Tokenizer interface (no special tokens added)."""

    def __init__(self, tok: Any):
        self.tok = tok
        self.tok.model_max_length = 1 << 40  # we window long texts ourselves; silence the length warning
        ids = [tok.bos_token_id, tok.eos_token_id]
        start = next((i for i in ids if i is not None), None)
        if start is None:
            raise CheckpointError("the Hugging Face tokenizer has neither a BOS nor an EOS token")
        self._start = int(start)
        backend = getattr(tok, "backend_tokenizer", None)
        blob = backend.to_str() if backend is not None else repr(sorted(tok.get_vocab().items()))
        self.sha256 = hashlib.sha256(blob.encode()).hexdigest()
        self.model_type = "huggingface"

    @property
    def eos_id(self) -> int:
        """The token that starts every scored stream (BOS when the model has one)."""
        return self._start

    @property
    def vocab_size(self) -> int:
        return len(self.tok)

    def encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def describe(self) -> dict[str, Any]:
        return {"type": "huggingface", "vocab_size": self.vocab_size, "sha256": self.sha256}


class HFModel:
    """`label` starts the error messages: what the user gave the folder as (an option, say)."""

    def __init__(self, path: str | Path, device: str | None = None, label: str = "Hugging Face model"):
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise UsageError(f"{label} needs PyTorch and transformers ({exc}); pip install -e '.[hf]'") from exc
        p = Path(path)
        if problem := folder_problem(p):
            raise CheckpointError(f"{label} {p}: {problem}")
        self.torch = torch
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            tok = AutoTokenizer.from_pretrained(p, trust_remote_code=False)
            self.model = AutoModelForCausalLM.from_pretrained(p, use_safetensors=True, trust_remote_code=False,
                                                              dtype=torch.float32).to(self.device).eval()
        except (OSError, ValueError, KeyError) as exc:
            msg = first_line(exc)
            raise CheckpointError(f"{label} {p}: cannot load the model ({msg})") from exc
        self.tokenizer = HFTokenizer(tok)
        # transformers 5 renamed the key/value cache argument (and output) `past_key_values` -> `cache`
        self.cache_arg = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        cfg = self.model.config
        self.context = int(min(getattr(cfg, "max_position_embeddings", MAX_CONTEXT) or MAX_CONTEXT, MAX_CONTEXT))
        self.n_params = int(sum(t.numel() for t in self.model.parameters()))
        self.info = {"format": "huggingface", "path": str(p), "checkpoint": str(p), "params": self.n_params,
                     "model": {"type": getattr(cfg, "model_type", None), "context": self.context}, "corpus": {}}

    def _logits(self, tokens: np.ndarray):
        torch = self.torch
        x = torch.as_tensor(np.asarray(tokens, np.int64), device=self.device)
        with torch.inference_mode():
            return self.model(input_ids=x).logits.float()

    def nll(self, inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """[B, T] inputs and targets -> [B, T] nats; causal, so padding after a row's end is harmless."""
        torch = self.torch
        logp = torch.log_softmax(self._logits(inputs), dim=-1)
        y = torch.as_tensor(np.asarray(targets, np.int64), device=self.device)
        return (-logp.gather(-1, y[..., None])[..., 0]).cpu().numpy().astype(np.float32)

    def next_logits(self, tokens: np.ndarray) -> np.ndarray:
        return self._logits(np.asarray(tokens)[None, -self.context:])[0, -1].cpu().numpy()

    def decoder(self) -> "HFDecoder":
        return HFDecoder(self)

    def sample(self, prefixes: Sequence[str], seed: int, max_new_tokens: int = 48, temperature: float = 1.0,
               top_k: int = 0, batch: int = 16) -> list[str]:
        """One sampled continuation per prefix (text after the prefix, up to the first newline).

        Batches are left-padded; each batch draws from torch's generator seeded by (seed, batch
        number), so the same seed gives the same samples."""
        torch = self.torch
        tok = self.tokenizer.tok
        pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or self.tokenizer.eos_id)
        start = self.tokenizer.eos_id
        out: list[str] = []
        for n, i in enumerate(range(0, len(prefixes), batch)):
            chunk = prefixes[i:i + batch]
            seqs = [[start] + self.tokenizer.encode(t)[-(self.context - max_new_tokens - 1):] for t in chunk]
            width = max(len(s) for s in seqs)
            ids = np.full((len(seqs), width), pad, np.int64)
            att = np.zeros((len(seqs), width), np.int64)
            for j, s in enumerate(seqs):  # left padding: every prompt ends where generation starts
                ids[j, width - len(s):] = s
                att[j, width - len(s):] = 1
            torch.manual_seed(int(seed) * 1_000_003 + n)
            with torch.inference_mode():
                gen = self.model.generate(
                    input_ids=torch.as_tensor(ids, device=self.device),
                    attention_mask=torch.as_tensor(att, device=self.device),
                    do_sample=True, temperature=temperature, top_k=top_k or None, max_new_tokens=max_new_tokens,
                    pad_token_id=pad, eos_token_id=tok.eos_token_id)
            for row in gen[:, width:].cpu().numpy():
                text = self.tokenizer.decode([t for t in row if t != pad])
                out.append(text.split("\n")[0])
        return out


class HFDecoder(ShiftingDecoder):
    """transformers' key/value cache behind the start/step interface (`lm.runtimes.ShiftingDecoder`)."""

    def __init__(self, model: HFModel):
        super().__init__(model.context)
        self.model, self.past = model, None

    def _run(self, tokens: list[int]) -> np.ndarray:
        torch = self.model.torch
        x = torch.as_tensor([tokens], dtype=torch.long, device=self.model.device)
        with torch.inference_mode():
            out = self.model.model(input_ids=x, use_cache=True, **{self.model.cache_arg: self.past})
        self.past = getattr(out, self.model.cache_arg)
        return out.logits[0, -1].float().cpu().numpy()

    def _prefill(self, tokens: list[int]) -> np.ndarray:
        self.past = None
        return self._run(tokens)

    def _extend(self, token: int, pos: int) -> np.ndarray:
        return self._run([token])
