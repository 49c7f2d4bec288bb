"""Back-translation: source language -> pivot -> source language, one variant per pivot.

Backends:
- `apertium` (default where the pair is installed): the `apertium` command, no shell, `-u` so
  unknown words are not marked, one process pair per batch (the forward and backward
  translators run concurrently, joined by a pipe), output checked to be line-aligned with the
  input; `*`, `#`, `@` markers the source line lacks are stripped wherever they stand (or the
  variant dropped with `markers = "reject"`; `augment.filters` drops any that remain).
- `transformers`: any seq2seq translation model (Marian, NLLB, M2M-100) from a local folder or a
  hub id, two models (forward, backward) or one multilingual model with language codes; beam
  search or sampling (top-k / top-p); safetensors only, never remote code. Sampling draws each
  record with its own seed, so results do not depend on batching.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping, Sequence

from augment.base import Augmenter, AugmenterError, check_number, rngs
from augment.filters import new_markers, strip_new_markers
from common.errors import first_line

# ISO 639-1 and -3 spellings that Apertium's mode names use.
CODES = {"en": ("eng", "en"), "es": ("spa", "es"), "gl": ("glg", "gl"), "pt": ("por", "pt"), "ca": ("cat", "ca"),
         "fr": ("fra", "fr"), "it": ("ita", "it"), "eu": ("eus", "eu"), "oc": ("oci", "oc"), "ro": ("ron", "ro"),
         "an": ("arg", "an"), "ast": ("ast",), "nn": ("nno", "nn"), "nb": ("nob", "nb"), "da": ("dan", "da"),
         "sv": ("swe", "sv"), "is": ("isl", "is"), "fo": ("fao", "fo")}


class AlignmentError(AugmenterError):
    """The backend returned a different number of lines than it was given."""


def installed_modes() -> list[str]:
    if shutil.which("apertium") is None:
        raise AugmenterError("the `apertium` command is not installed; install Debian's apertium and a pair, "
                             "e.g. apt-get install apertium apertium-es-gl")
    out = subprocess.run(["apertium", "-l"], capture_output=True, text=True, timeout=60)
    return sorted(line.strip() for line in out.stdout.splitlines() if line.strip())


def find_mode(src: str, tgt: str, modes: Sequence[str]) -> str:
    for a in CODES.get(src, (src,)):
        for b in CODES.get(tgt, (tgt,)):
            if f"{a}-{b}" in modes:
                return f"{a}-{b}"
    a, b = CODES.get(src, (src,))[-1], CODES.get(tgt, (tgt,))[-1]
    raise AugmenterError(f"no Apertium mode {a}-{b} (installed: {', '.join(modes) or 'none'}); install the Debian "
                         f"package for the pair, e.g. apertium-{a}-{b} or apertium-{b}-{a} (apt-cache search apertium)")


def _one_line(text: str) -> str:
    return " ".join(text.split())


class ApertiumRoundTrip:
    """src -> pivot -> src for many lines in one pass: two processes joined by a pipe."""

    def __init__(self, language: str, pivot: str, timeout_s: float = 600, jobs: int | None = None):
        modes = installed_modes()
        self.forward, self.backward = find_mode(language, pivot, modes), find_mode(pivot, language, modes)
        self.timeout_s = timeout_s
        # An Apertium pipeline keeps about one core busy; one pipeline per core per batch.
        self.jobs = jobs or os.cpu_count() or 1

    def translate(self, texts: Sequence[str]) -> list[str]:
        """Texts with several lines (verse, dialogue) are translated line by line and rejoined."""
        parts = [t.split("\n") for t in texts]
        lines = [line for p in parts for line in p]
        size = max(1, -(-len(lines) // self.jobs))
        chunks = [lines[i:i + size] for i in range(0, len(lines), size)]
        if len(chunks) > 1:
            with ThreadPoolExecutor(len(chunks)) as pool:
                flat = [t for chunk in pool.map(self._translate_lines, chunks) for t in chunk]
        else:
            flat = self._translate_lines(lines)
        out, i = [], 0
        for p in parts:
            out.append("\n".join(flat[i:i + len(p)]))
            i += len(p)
        return out

    def _translate_lines(self, lines: Sequence[str]) -> list[str]:
        data = "".join(_one_line(t) + "\n" for t in lines).encode("utf-8")
        fwd = subprocess.Popen(["apertium", "-u", self.forward], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
        bwd = subprocess.Popen(["apertium", "-u", self.backward], stdin=fwd.stdout, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
        fwd.stdout.close()  # the backward process owns the pipe now
        try:
            fwd.stdin.write(data)
            fwd.stdin.close()
            out, err = bwd.communicate(timeout=self.timeout_s)
            fwd.wait(timeout=self.timeout_s)
        except (BrokenPipeError, subprocess.TimeoutExpired) as exc:
            fwd.kill()
            bwd.kill()
            raise AugmenterError(f"apertium {self.forward}|{self.backward} failed: {type(exc).__name__}") from None
        if fwd.returncode or bwd.returncode:
            raise AugmenterError(f"apertium {self.forward}|{self.backward} exited {fwd.returncode}/{bwd.returncode}: "
                                 f"{err.decode(errors='replace').strip()[:200]}")
        result = out.decode("utf-8", errors="replace").split("\n")
        if result and result[-1] == "":
            result.pop()
        if len(result) != len(lines):
            raise AlignmentError(f"apertium returned {len(result)} lines for {len(lines)}")
        return result


class TransformersRoundTrip:
    """src -> pivot -> src with Hugging Face seq2seq models (PyTorch, safetensors only)."""

    def __init__(self, forward: str, backward: str | None = None, src_code: str | None = None,
                 pivot_code: str | None = None, num_beams: int = 4, do_sample: bool = False, top_k: int = 0,
                 top_p: float = 1.0, temperature: float = 1.0, batch_size: int = 16, device: str = "cpu",
                 max_new_tokens: int = 256):
        self.forward_path, self.backward_path = forward, backward or forward
        self.src_code, self.pivot_code = src_code, pivot_code
        if backward is None and not (src_code and pivot_code):
            raise AugmenterError("one multilingual model needs src_code and pivot_code (e.g. glg_Latn, spa_Latn)")
        self.gen = {"num_beams": 1 if do_sample else num_beams, "do_sample": do_sample, "max_new_tokens": max_new_tokens}
        if do_sample:
            self.gen.update(top_k=top_k, top_p=top_p, temperature=temperature)
        self.batch_size, self.device = batch_size, device
        self.models: dict[str, Any] = {}

    def _load(self, path: str) -> tuple[Any, Any]:
        if path not in self.models:
            from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

            try:
                tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
                model = AutoModelForSeq2SeqLM.from_pretrained(path, use_safetensors=True, trust_remote_code=False)
            except (OSError, ValueError) as exc:
                why = first_line(exc, default="", limit=None)  # augment's words: empty stays empty, nothing cut
                raise AugmenterError(f"cannot load translation model {path}: {why}") from None
            self.models[path] = (tok, model.to(self.device).eval())
        return self.models[path]

    def _translate(self, path: str, texts: list[str], src: str | None, tgt: str | None, seeds: list[int] | None) -> list[str]:
        import torch

        tok, model = self._load(path)
        extra = {}
        if src and tgt:
            tok.src_lang = src
            extra["forced_bos_token_id"] = tok.convert_tokens_to_ids(tgt)
        out: list[str] = []
        # Sampling draws one record at a time from its own seed; beam search batches freely.
        step = 1 if self.gen["do_sample"] else self.batch_size
        for i in range(0, len(texts), step):
            chunk = texts[i:i + step]
            if seeds is not None:
                torch.manual_seed(seeds[i])
            enc = tok(chunk, return_tensors="pt", padding=True, truncation=True).to(self.device)
            with torch.no_grad():
                ids = model.generate(**enc, **self.gen, **extra)
            out += tok.batch_decode(ids, skip_special_tokens=True)
        return out

    def translate(self, lines: Sequence[str], seeds: list[int] | None = None) -> list[str]:
        pivot = self._translate(self.forward_path, list(lines), self.src_code, self.pivot_code, seeds)
        return self._translate(self.backward_path, pivot, self.pivot_code, self.src_code, seeds)


# The transformers backend's options (TransformersRoundTrip's parameters, `models` per pivot) and
# their ranges; Apertium takes none, so any extra key there is a typo.
TRANSFORMERS_OPTIONS = {"forward", "backward", "src_code", "pivot_code", "do_sample", "device", "models", "num_beams",
                        "top_k", "top_p", "temperature", "batch_size", "max_new_tokens"}
_RANGES = {"num_beams": (1, 64, True), "top_k": (0, 1_000_000, True), "top_p": (0.0, 1.0, False),
           "temperature": (1e-6, 100.0, False), "batch_size": (1, 100_000, True), "max_new_tokens": (1, 100_000, True)}


class BackTranslateAugmenter(Augmenter):
    """Round trips through each pivot. With Apertium a sentence's translation can depend on the
    lines before it in the same call (its tagger and transfer keep state across lines), so the
    output is a function of the batch; the pipeline fixes batches by record id."""

    name = "backtranslate"

    def __init__(self, language: str, pivot: str | Sequence[str] = "es", backend: str = "apertium",
                 markers: str = "strip", variants: int = 1, **backend_options: Any):
        pivots = [pivot] if isinstance(pivot, str) else list(pivot)
        if not pivots:
            raise ValueError("pivot must name at least one language")
        if markers not in ("strip", "reject"):
            raise ValueError("markers must be 'strip' or 'reject'")
        if backend not in ("apertium", "transformers"):
            raise ValueError(f"unknown backtranslate backend {backend!r} (apertium, transformers)")
        unknown = sorted(set(backend_options) - self.extra_parameters({"backend": backend}))
        if unknown:
            raise ValueError(f"{unknown[0]}: not an option of the {backend} backend")
        for key, (low, high, integer) in _RANGES.items():
            if key in backend_options:
                check_number(key, backend_options[key], low, high, integer)
        super().__init__(variants=variants, backend=backend, pivot=pivots, markers=markers, **backend_options)
        self.language, self.pivots, self.backend, self.markers = language, pivots, backend, markers
        self.context_free = self.is_context_free({"backend": backend})
        self.options = backend_options
        self.engines: list[Any] = []

    @classmethod
    def is_context_free(cls, params: Mapping[str, Any]) -> bool:
        return params.get("backend", "apertium") != "apertium"

    @classmethod
    def extra_parameters(cls, params: Mapping[str, Any]) -> frozenset[str]:
        return frozenset(TRANSFORMERS_OPTIONS) if params.get("backend") == "transformers" else frozenset()

    def setup(self) -> None:
        if self.engines:
            return
        if self.backend == "apertium":
            self.engines = [ApertiumRoundTrip(self.language, p) for p in self.pivots]
        else:
            models = self.options.get("models") or {}
            self.engines = []
            for p in self.pivots:
                opts = {k: v for k, v in self.options.items() if k != "models"}
                if p in models:  # per pivot: {"es": {"forward": ..., "backward": ...}}
                    opts.update(models[p])
                self.engines.append(TransformersRoundTrip(**opts))

    def variant_params(self, k: int) -> dict[str, Any]:
        return {**self.params, "pivot": self.pivots[k % len(self.pivots)]}

    def clean(self, parent: str, text: str) -> str:
        """Markers its parent lacks stripped, or "" (dropped by the filters as empty) when asked
        to reject them."""
        if self.markers == "reject" and new_markers(parent, text):
            return ""
        return "\n".join(" ".join(line.split()) for line in strip_new_markers(parent, text).split("\n"))

    def augment_batch(self, texts: Sequence[str], seeds: int | Sequence[int]) -> list[list[str]]:
        self.setup()
        streams = rngs(seeds, len(texts))
        results: list[list[str]] = [[] for _ in texts]
        for engine in self.engines:
            for _ in range(self.variants if self.backend == "transformers" else 1):
                if isinstance(engine, TransformersRoundTrip):
                    draws = [rng.getrandbits(63) for rng in streams]  # a fresh seed per variant
                    out = engine.translate(texts, draws if engine.gen["do_sample"] else None)
                else:
                    out = engine.translate(texts)
                for i, t in enumerate(out):
                    results[i].append(self.clean(texts[i], t))
        return results
