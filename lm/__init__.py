"""Language models in Flax/JAX: tokenizer, data, model, training, evaluation, generation.

Modules: `corpus` (snapshot text and the joining rule), `tokenizer` (SentencePiece), `data`
(token cache, packing, resumable batches), `model` (Llama-style NNX model and presets),
`parallel` (data-parallel mesh), `checkpoint` (Orbax), `train`, `loader` (MODEL paths),
`evaluate` (bits per character), `generate`, `errors`. The core imports neither `pipelines`
nor `augment`.
"""
