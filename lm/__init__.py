"""Language models in Flax/JAX: the core, the distillation loop (`lm.distill`) and shipping (`lm.ship`).

The core (modules directly in `lm/`; imports neither `lm.distill`, `lm.ship`, `pipelines` nor
`augment`, only `common`): `corpus` (snapshot text and the joining rule), `tokenizer`
(SentencePiece), `data` (token cache, packing, pools of real and augmented text, resumable
batches), `model` (Llama-style NNX model with an optional key/value cache, presets), `losses`
(cross-entropy, distillation KL), `trainer` (the one training loop), `run` (run folder: run.json,
metrics, DONE), `checkpoint` (Orbax), `parallel` (data-parallel mesh), `scoring` (bits per
character of a model it is given), `loader` (MODEL paths: run folders, int8 and Hugging Face
exports), `runtimes` (GGUF and ONNX exports on llama.cpp and ONNX Runtime, without JAX),
`hf_model` (Hugging Face causal LMs), `quant` (int8), `decode` (cached generation), `sampling`,
`ngram` (the character n-gram anchor, also a command), `files` (the compilation cache), `errors`
(lm's kinds on `common.errors`); thin commands `train`, `evaluate`, `generate`. The snapshot
format, atomic writes and the error base are the bottom layer's (`common`).

`lm.distill` (`python -m lm.distill`): teacher-judged augmentation plus distillation; the only
part of `lm` that imports `pipelines`. `lm.ship`: export (Hugging Face, int8, GGUF, ONNX),
pruning and the deployment report.
"""
