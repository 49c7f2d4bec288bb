"""The model card (`README.md`) of an `hf` export: Hugging Face Hub YAML front matter and a body.

Front matter: `language` and `license` from the corpus spec (`spec.toml` in the snapshot's version
folder), the licence mapped to a Hub id where it names one (`hub_license`; else `other` with a
`license_name`, or `unknown` when the spec has none), `datasets` (the corpus name; the version is
in `model-index` and the body), `library_name: transformers`, `pipeline_tag: text-generation`,
`tags`, and `model-index` with the test bits per character when one is recorded.

Figures are only ever read, never computed here (`recorded_figures`): the model's own test bits
per character from `DONE.json` (an `lm.distill` model) or `prune.json` (`lm.ship.prune`), and the
baseline's, teacher's and n-gram anchor's from the distillation's `report.json` two folders up.
They describe the best checkpoint, so an export of another checkpoint says "not recorded", as
does a plain `lm.train` run (`lm.evaluate` measures it).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from common.errors import DataError
from common.files import read_json
from common.snapshot_format import SPEC_COPY, read_spec_copy
from lm.model import ModelConfig

# Hub licence ids (https://huggingface.co/docs/hub/repositories-licenses) a corpus spec is likely to name
HUB_LICENSES = frozenset({
    "apache-2.0", "mit", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd", "bsd-2-clause", "bsd-3-clause",
    "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0",
    "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0", "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0",
    "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0", "epl-2.0", "gpl-2.0", "gpl-3.0", "lgpl-2.1",
    "lgpl-3.0", "agpl-3.0", "mpl-2.0", "odc-by", "odbl", "pddl", "unlicense", "wtfpl", "zlib",
})
MODEL_FIGURES = (("DONE.json", ("test_bits_per_char",)),                # lm.distill
                 ("prune.json", ("finetuned", "test_bits_per_char")),  # lm.ship.prune
                 ("prune.json", ("final", "test_bits_per_char")))      # ... without a fine-tune
PEERS = ("baseline", "teacher", "ngram")
LABELS = {"baseline": "baseline (same size, no distillation)", "teacher": "teacher",
          "ngram": "character n-gram (anchor)"}


def hub_license(text: str | None) -> dict[str, str]:
    """A spec's licence as Hub metadata: {"license": id}, or "other" with a `license_name`."""
    if not text or not text.strip():
        return {"license": "unknown"}
    head = re.sub(r"\(.*?\)", "", text).strip().lower()  # "(research use only)" is a note, not the licence
    slug = re.sub(r"[^a-z0-9.]+", "-", head).strip("-")
    if slug in HUB_LICENSES:
        return {"license": slug}
    return {"license": "other", "license_name": slug or "unnamed"}


def corpus_spec(corpus: dict[str, Any]) -> dict[str, Any]:
    """The snapshot's spec.toml as a dict ({} when it is missing or unreadable: the card says less)."""
    try:
        return read_spec_copy(Path(corpus["path"]) / SPEC_COPY) if corpus.get("path") else {}
    except DataError:
        return {}


def _dig(doc: Any, keys: tuple[str, ...]) -> float | None:
    for k in keys:
        doc = doc.get(k) if isinstance(doc, dict) else None
    return float(doc) if isinstance(doc, (int, float)) else None


def _read(path: Path) -> Any:
    try:
        return read_json(path) if path.is_file() else None
    except (OSError, ValueError):
        return None


def recorded_figures(info: dict[str, Any]) -> dict[str, float | None]:
    """Test bits per character recorded beside the run: "model", and "baseline", "teacher",
    "ngram" when the run is a model of an `lm.distill` run. Only for the best checkpoint."""
    out: dict[str, float | None] = {k: None for k in ("model", *PEERS)}
    if not str(info.get("checkpoint") or "").startswith("best/") or not info.get("path"):
        return out
    run = Path(info["path"])
    for name, keys in MODEL_FIGURES:
        if out["model"] is None:
            out["model"] = _dig(_read(run / name), keys)
    if run.parent.name == "models":
        models = (_read(run.parent.parent / "report.json") or {}).get("models", {})
        for peer in PEERS:
            out[peer] = _dig(models, (peer, "test_bits_per_char"))
    return out


USAGE = '''```python
from transformers import AutoModelForCausalLM, AutoTokenizer
import torch

folder = {folder}  # this folder (local files only; nothing is downloaded)
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder)
# every text starts after the end-of-sequence token, as in training
ids = tokenizer(tokenizer.bos_token + {prompt}, add_special_tokens=False, return_tensors="pt").input_ids
torch.manual_seed(0)
out = model.generate(ids, max_new_tokens=20, do_sample=True, top_p=0.95, pad_token_id=tokenizer.eos_token_id)
print(tokenizer.decode(out[0], skip_special_tokens=True))
```'''
PROMPTS = {"gl": "A enfermidade", "en": "First Citizen:"}


def _fmt(x: float | None) -> str:
    return f"{x:.4f}" if x is not None else "not recorded"


def model_card(info: dict[str, Any], cfg: ModelConfig, folder: str) -> str:
    """README.md for an hf export of the model described by `info` (`lm.loader`'s), in `folder`."""
    corpus = info.get("corpus") or {}
    spec = corpus_spec(corpus)
    name, version = corpus.get("name") or spec.get("name") or "unknown", corpus.get("version")
    lang = spec.get("language")
    figures = recorded_figures(info)
    meta: dict[str, Any] = {}
    if lang:
        meta["language"] = [lang] if isinstance(lang, str) else list(lang)
    meta |= hub_license(spec.get("license"))
    meta |= {"datasets": [name], "library_name": "transformers", "pipeline_tag": "text-generation",
             "tags": ["scarce-lm", "llama", "causal-lm", "small-data"]}
    if figures["model"] is not None:
        meta["model-index"] = [{"name": f"{name}-lm", "results": [{
            "task": {"type": "text-generation", "name": "Language modelling"},
            "dataset": {"type": name, "name": f"{name} {version}", "split": "test", "revision": version},
            "metrics": [{"type": "bits_per_character", "name": "Test bits per character",
                         "value": round(figures["model"], 4)}]}]}]
    params = info.get("params") or cfg.n_params()
    rows = [("this model", figures["model"])] + [(p, figures[p]) for p in PEERS if figures[p] is not None]
    table = "\n".join(f"| {LABELS.get(label, label)} | {_fmt(v)} |" for label, v in rows)
    missing = ("" if figures["model"] is not None else
               '\n"not recorded": the run keeps no test figure for this checkpoint; measure it with\n'
               f"`python -m lm.evaluate {folder} --split test --corpus OUT/{name}`.\n")
    licence = spec.get("license") or "not stated in the corpus spec"
    body = f"""# {name} language model (scarce-lm)

A small Llama-architecture causal language model ({params:,} parameters, {cfg.n_layers} layers,
dimension {cfg.dim}, context {cfg.context} tokens, {cfg.vocab_size}-piece SentencePiece vocabulary)
trained with scarce-lm on the corpus `{name}` version `{version}`
(language: {lang or "not stated"}). Source run: `{info.get("path")}`, checkpoint `{info.get("checkpoint")}`.

## Results

Bits per character on the corpus's test split (lower is better), as recorded by the run:

| model | test bits/char |
|---|---|
{table}
{missing}
## Usage

{USAGE.format(folder=repr(folder), prompt=repr(PROMPTS.get(lang or "", "The")))}

## Licence

The training text's licence: {licence}. This card's `license` is the Hub's id for it.
"""
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n" + body
