"""Language models in Flax/JAX: tokenizer, data, model, training, distillation, evaluation,
generation and shipping.

Modules: `corpus` (snapshot text and the joining rule), `tokenizer` (SentencePiece), `data`
(token cache, packing, resumable batches), `model` (Llama-style NNX model and presets),
`parallel` (data-parallel mesh), `checkpoint` (Orbax), `train`, `loader` (MODEL paths),
`evaluate` (bits per character), `generate`, `decode` (key/value cache), `errors`.
Distillation (`distill`, the loop): `kd` (losses), `kd_train` (one training phase), `judge`
(batched scoring and the quantile filter), `teacher_cache` (top-k), `mixture` and `pools`
(real and augmented batches), `gain` (dev gains and next mixture weights), `hf_teacher`
(Hugging Face models), `distill_report`. Shipping: `export` (hf, int8), `hf_format`, `quant`,
`prune`, `deploy`. The core imports neither `pipelines` nor `augment`; `distill` runs
`pipelines.augment` when a snapshot has no augmented text, and for later rounds.
"""
