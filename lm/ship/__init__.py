"""Shipping a trained run: what turns a run folder into something to deploy.

* `export` (`python -m lm.ship.export`): a Hugging Face `LlamaForCausalLM` folder (`hf`, with
  `hf_format`'s weight and tokenizer mapping), weight-only int8 (`int8`, `lm.quant`), GGUF for
  llama.cpp (`gguf_format`) or ONNX for ONNX Runtime (`onnx_format`), the last two with a model
  card whose code runs them (`runtime_card`); all are read back by the core's `lm.loader`.
* `prune` (`python -m lm.ship.prune`): magnitude pruning with a recovery fine-tune (`lm.trainer`).
* `deploy` (`python -m lm.ship.deploy`): makes every form of a run and measures size, bits per
  character and generation speed and memory.

This package imports the `lm` core only; the core never imports it.
"""
