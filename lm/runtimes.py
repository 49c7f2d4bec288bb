"""Exports that other runtimes serve: GGUF on llama.cpp, ONNX on ONNX Runtime; no JAX imported.

`load_native(PATH)` reads a `gguf` or `onnx` export (`lm.ship.export`; export.json checked by
`read_export`) into a model with the interface `lm.loader` documents (tokenizer, context, info,
`nll`, `next_logits`, `decoder()`), so `lm.evaluate`, `lm.generate` and the deployment report
treat it as any other model, and a process serving one holds only the runtime and the weights.
The tokenizer is ours (`tokenizer.model`, SentencePiece), which gives llama.cpp's own ids on
text inside the vocabulary (`lm.ship.gguf_format`: the one difference).

`ShiftingDecoder` is the one context-shift rule of every decoder (`lm.decode.CachedDecoder`
too): prompt in one pass, one position per token, and when the cache is full, start again from
the last half of the tokens.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from common.files import read_json, sha256_file
from lm.errors import CheckpointError, first_line
from lm.tokenizer import MODEL_FILE, Tokenizer

EXPORT_FILE, WEIGHTS = "export.json", "model.safetensors"  # an export's description and its default weights
NATIVE = ("gguf", "onnx")


def read_export(path: Path, fmt: str) -> dict[str, Any]:
    """export.json, with the weights checked against their sha256."""
    try:
        info = read_json(path / EXPORT_FILE)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path / EXPORT_FILE} cannot be read ({first_line(exc)}): "
                              "not a complete export") from exc
    if info.get("format") != fmt:
        raise CheckpointError(f"{path / EXPORT_FILE}: format {info.get('format')!r}, expected {fmt!r}")
    weights = path / info.get("weights", WEIGHTS)
    if not weights.is_file():
        raise CheckpointError(f"export {path}: {weights.name} is missing")
    if weights.stat().st_size != info.get("bytes") or sha256_file(weights) != info.get("sha256"):
        raise CheckpointError(f"export {path}: {weights.name} does not match the sha256 in {EXPORT_FILE} "
                              "(corrupt or truncated): export it again")
    return info


def export_format(path: Path) -> str | None:
    try:
        return read_json(path / EXPORT_FILE).get("format")
    except (OSError, ValueError, AttributeError):
        return None


def threads() -> int:
    """Threads a runtime may use: SCARCE_LM_THREADS (the deployment probes' one-thread setting), else every core."""
    return int(os.environ.get("SCARCE_LM_THREADS") or os.cpu_count() or 1)


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def gathered_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """[..., T, V] logits and [..., T] targets -> [..., T] float32 nats."""
    lp = log_softmax(logits)
    return -np.take_along_axis(lp, targets[..., None].astype(np.int64), axis=-1)[..., 0].astype(np.float32)


class ShiftingDecoder:
    """start(tokens) and step(token) -> next-token logits over a cache of `context` positions;
    subclasses compute: `_prefill(tokens)` (a fresh cache) and `_extend(token, pos)`."""

    def __init__(self, context: int):
        self.context = context
        self.tokens: list[int] = []

    def _prefill(self, tokens: list[int]) -> np.ndarray:
        raise NotImplementedError

    def _extend(self, token: int, pos: int) -> np.ndarray:
        raise NotImplementedError

    def start(self, tokens: list[int]) -> np.ndarray:
        """Logits after the prompt (at most `context` tokens are kept: the last ones)."""
        if not len(tokens):
            raise ValueError("a prompt needs at least one token (the start token)")
        self.tokens = [int(t) for t in tokens][-self.context:]
        return self._prefill(self.tokens)

    def step(self, token: int) -> np.ndarray:
        """Logits after appending `token`: one position computed, the rest read from the cache."""
        if len(self.tokens) >= self.context:  # full: keep the last half and go on from there
            return self.start(self.tokens[-(self.context // 2 - 1):] + [int(token)])
        logits = self._extend(int(token), len(self.tokens))
        self.tokens.append(int(token))
        return logits


class NativeModel:
    """What both runtimes share: the export's description, our tokenizer, scoring row by row."""

    def __init__(self, path: Path, info: dict[str, Any]):
        self.tokenizer = Tokenizer.load(path / MODEL_FILE)
        self.tokenizer.model_type = info.get("tokenizer", {}).get("type")
        self.context = int(info["model"]["context"])
        self.info = {"format": info["format"], "path": str(path), "checkpoint": info.get("checkpoint"),
                     "corpus": info.get("corpus", {}), "model": info["model"], "quant": info.get("quant")}

    def logits(self, rows: np.ndarray) -> np.ndarray:
        """[B, T] ids -> [B, T, V] logits, each row from an empty cache."""
        raise NotImplementedError

    def nll(self, inputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        return gathered_nll(self.logits(np.asarray(inputs)), np.asarray(targets))

    def next_logits(self, tokens: np.ndarray) -> np.ndarray:
        row = np.asarray(tokens, np.int64)[-self.context:]
        return self.logits(row[None])[0, -1]


class LlamaCppModel(NativeModel):
    """A GGUF export on llama.cpp (llama-cpp-python). One cache: scoring and one decoder at a time."""

    def __init__(self, path: Path, info: dict[str, Any]):
        super().__init__(path, info)
        from llama_cpp import Llama
        n = threads()
        self.llm = Llama(model_path=str(path / info["weights"]), n_ctx=self.context, n_batch=self.context,
                         n_ubatch=self.context, logits_all=True, n_threads=n, n_threads_batch=n, verbose=False)

    def run(self, tokens: list[int], keep: int) -> np.ndarray:
        """Evaluate `tokens` after the first `keep` cached positions; their logits."""
        self.llm.n_tokens = keep  # llama-cpp-python drops cached positions past n_tokens
        self.llm.eval(tokens)
        return np.array(self.llm.scores[keep:keep + len(tokens)])  # a copy: the next eval overwrites scores

    def logits(self, rows: np.ndarray) -> np.ndarray:
        return np.stack([self.run([int(t) for t in row], 0) for row in rows])

    def decoder(self) -> ShiftingDecoder:
        model = self

        class Decoder(ShiftingDecoder):
            def _prefill(self, tokens: list[int]) -> np.ndarray:
                return model.run(tokens, 0)[-1]

            def _extend(self, token: int, pos: int) -> np.ndarray:
                return model.run([token], pos)[-1]
        return Decoder(self.context)


class OrtModel(NativeModel):
    """An ONNX export on ONNX Runtime (CPU): inputs `input_ids` and `past_key_N`/`past_value_N`,
    outputs `logits` and `present_key_N`/`present_value_N` (`lm.ship.onnx_format`)."""

    def __init__(self, path: Path, info: dict[str, Any]):
        super().__init__(path, info)
        import onnxruntime as ort
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads(), 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path / info["weights"]), opts, providers=["CPUExecutionProvider"])
        m = info["model"]
        self.layers, self.heads, self.head_dim = m["n_layers"], m["n_heads"], m["dim"] // m["n_heads"]

    def empty(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, self.heads, 0, self.head_dim), np.float32)] * (2 * self.layers)

    def run(self, ids: np.ndarray, past: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        feed = {"input_ids": np.asarray(ids, np.int64)}
        for i in range(self.layers):
            feed[f"past_key_{i}"], feed[f"past_value_{i}"] = past[2 * i], past[2 * i + 1]
        logits, *present = self.session.run(None, feed)
        return logits, present

    def logits(self, rows: np.ndarray) -> np.ndarray:
        return self.run(rows, self.empty(len(rows)))[0]

    def decoder(self) -> ShiftingDecoder:
        model = self

        class Decoder(ShiftingDecoder):
            def _prefill(self, tokens: list[int]) -> np.ndarray:
                logits, self.past = model.run(np.asarray([tokens]), model.empty(1))
                return logits[0, -1]

            def _extend(self, token: int, pos: int) -> np.ndarray:
                logits, self.past = model.run(np.asarray([[token]]), self.past)
                return logits[0, -1]
        return Decoder(self.context)


def runtime_module(path: str | Path) -> Any:
    """Imports the runtime an export needs (llama_cpp or onnxruntime)."""
    import importlib
    return importlib.import_module("llama_cpp" if export_format(Path(path)) == "gguf" else "onnxruntime")


def load_native(path: str | Path) -> NativeModel:
    """A `gguf` or `onnx` export of `lm.ship.export`, checked against its export.json."""
    p = Path(path)
    fmt = export_format(p)
    if fmt not in NATIVE:
        raise CheckpointError(f"{p} is not a gguf or onnx export (export.json format {fmt!r})")
    info = read_export(p, fmt)
    return (LlamaCppModel if fmt == "gguf" else OrtModel)(p, info)
