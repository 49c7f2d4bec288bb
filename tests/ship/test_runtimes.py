"""GGUF on llama.cpp and ONNX on ONNX Runtime, checked by the runtimes themselves: the same token
ids as our tokenizer, bits per character of real test text beside Flax's, the greedy continuation
of Flax, and the model card's code run as written with nothing of this project on the path."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import gl_lines, tiny_run
from lm.errors import run_cli
from lm.generate import generate_ids
from lm.loader import load_model
from lm.model import ModelConfig
from lm.runtimes import LlamaCppModel, OrtModel, load_native
from lm.scoring import evaluate
from lm.ship.export import main as export_main
from lm.ship.gguf_format import write_gguf
from lm.ship.runtime_card import NEW_TOKENS, PROMPT

PROMPTS = ("A ", "O paciente", "Os resultados mostran que", "\n")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory)


@pytest.fixture(scope="module")
def exports(run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("runtimes")
    out = {}
    for fmt, quant in (("gguf", "f32"), ("gguf", "q8_0"), ("onnx", "f32"), ("onnx", "int8")):
        out[f"{fmt}-{quant}"] = base / f"{fmt}-{quant}"
        assert export_main([str(run), "--format", fmt, "--quant", quant, "--out", str(out[f"{fmt}-{quant}"])]) == 0
    return out


def test_llama_cpp_tokenizes_real_text_to_our_ids(run: Path, exports: dict[str, Path]) -> None:
    model = load_native(exports["gguf-q8_0"])
    assert isinstance(model, LlamaCppModel)
    ours = load_model(run).tokenizer
    same = oov = 0
    for line in gl_lines("test", 400):
        theirs = model.llm.tokenize(line.encode("utf-8"), add_bos=False, special=False)
        ids = ours.encode(line)
        if any(ours.sp.is_byte(i) for i in ids):  # llama.cpp's unigram has no byte fallback:
            oov += 1                            # one UNK where ours has a run of byte pieces
            collapsed = [ours.sp.unk_id() if ours.sp.is_byte(i) else i for k, i in enumerate(ids)
                         if not (k and ours.sp.is_byte(i) and ours.sp.is_byte(ids[k - 1]))]
            assert theirs == collapsed, line
        else:
            same += 1
            assert theirs == ids, line
    assert same > 300 and oov > 0  # both cases met on real text
    # BOS is our start token: llama.cpp's own prompt handling starts texts as training did
    assert model.llm.tokenize(b"A casa", add_bos=True)[0] == ours.eos_id


@pytest.mark.parametrize("name,tolerance", [("gguf-f32", 0.01), ("gguf-q8_0", 0.03), ("onnx-f32", 0.01),
                                            ("onnx-int8", 0.03)])
def test_runtime_scores_real_test_text_like_flax(run: Path, exports: dict[str, Path], name: str,
                                                 tolerance: float) -> None:
    flax = evaluate(load_model(run), "test")["bits_per_char"]
    got = evaluate(load_model(exports[name]), "test")["bits_per_char"]  # lm.loader reads the export
    assert got == pytest.approx(flax, rel=tolerance)
    if name.endswith("f32"):
        assert got == pytest.approx(flax, rel=2e-3)  # float: rounding, not a different model


@pytest.mark.parametrize("name", ["gguf-f32", "onnx-f32"])
def test_runtime_greedy_continuations_are_flaxs(run: Path, exports: dict[str, Path], name: str) -> None:
    flax, native = load_model(run), load_native(exports[name])
    for prompt in PROMPTS:  # 80 new tokens run past the tiny model's context: the shift is checked too
        want = generate_ids(flax, prompt, max_tokens=80, temperature=0.0, stop_at_eos=False)
        assert generate_ids(native, prompt, max_tokens=80, temperature=0.0, stop_at_eos=False) == want, prompt


def _card_code(folder: Path, fence: str) -> str:
    text = (folder / "README.md").read_text(encoding="utf-8")
    start = text.index(f"```{fence}\n") + len(fence) + 4
    return text[start:text.index("```", start)]


def _run_alone(cmd: list[str], cwd: Path) -> str:
    """A command run from the export folder, with no path to this project."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


@pytest.mark.parametrize("name", ["gguf-f32", "onnx-f32"])
def test_model_card_code_runs_alone_and_continues_as_flax(run: Path, exports: dict[str, Path], name: str) -> None:
    folder = exports[name]
    if name.startswith("gguf"):
        out = _run_alone(["bash", "-c", _card_code(folder, "sh")], folder)
    else:
        out = _run_alone([sys.executable, "-I", "-c", _card_code(folder, "python")], folder)
    flax = load_model(run)
    ids = generate_ids(flax, PROMPT, max_tokens=NEW_TOKENS, temperature=0.0)
    assert out.rstrip("\n") == flax.tokenizer.decode(ids).rstrip("\n")


def test_exports_are_a_third_of_float_or_less_and_described(exports: dict[str, Path]) -> None:
    size = {k: (p / json.loads((p / "export.json").read_text())["weights"]).stat().st_size for k, p in exports.items()}
    assert size["gguf-q8_0"] <= 0.35 * size["gguf-f32"]
    # the graph's scales and zero points weigh more beside a 40K-parameter model than beside the
    # student (bench/deploy.py: its onnx-int8 against 35% of float32)
    assert size["onnx-int8"] <= 0.45 * size["onnx-f32"]
    info = json.loads((exports["gguf-q8_0"] / "export.json").read_text())
    assert info["quant"] == "q8_0" and info["kept_f16"] == []
    assert isinstance(load_native(exports["onnx-int8"]), OrtModel)


def test_q8_0_keeps_rows_that_are_not_whole_blocks_in_f16(run: Path, tmp_path: Path) -> None:
    from lm.model import init_params
    from lm.ship.hf_format import hf_state_dict
    import jax

    tok = load_model(run).tokenizer
    cfg = ModelConfig(dim=32, n_layers=1, n_heads=2, hidden_dim=48, context=16, vocab_size=tok.vocab_size)
    state = hf_state_dict(jax.tree.map(np.asarray, init_params(cfg, 0)), cfg)
    kept = write_gguf(tmp_path / "m.gguf", state, cfg, tok, "q8_0", "odd")
    assert kept == ["blk.0.ffn_down.weight"]  # rows of 48 values; gate and up have rows of 32


def test_a_corrupt_export_and_a_wrong_quant_stop_with_one_line(run: Path, exports: dict[str, Path], tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    assert run_cli(export_main, [str(run), "--format", "onnx", "--quant", "q8_0", "--out", str(tmp_path / "x")]) == 2
    assert "--quant q8_0 is not one of onnx's" in capsys.readouterr().err
    assert run_cli(export_main, [str(run), "--format", "hf", "--quant", "f16", "--out", str(tmp_path / "y")]) == 2
    bad = tmp_path / "bad"
    import shutil
    shutil.copytree(exports["gguf-q8_0"], bad)
    with open(bad / "model.gguf", "r+b") as f:
        f.seek(-8, 2)
        f.write(b"\0" * 8)
    from lm.evaluate import main as eval_main
    assert run_cli(eval_main, [str(bad), "--split", "test"]) == 1
    assert "does not match the sha256" in capsys.readouterr().err


def test_both_runtimes_give_flaxs_logits_where_positions_matter(run: Path, tmp_path: Path) -> None:
    """A trained tiny model barely attends by position; here q and k are scaled up so that
    attention is sharp, and a rotary layout error (llama.cpp's interleaved pairs against our
    rotate-half) or a wrong mask would move every logit."""
    import jax
    import onnxruntime as ort
    from llama_cpp import Llama
    from lm.model import init_params, make_apply
    from lm.ship.hf_format import hf_state_dict
    from lm.ship.onnx_format import build

    tok = load_model(run).tokenizer
    cfg = ModelConfig(dim=64, n_layers=2, n_heads=2, hidden_dim=128, context=32, vocab_size=tok.vocab_size)
    params = jax.tree.map(np.asarray, init_params(cfg, 0))
    for layer in params["layers"].values():
        for name in ("q_proj", "k_proj"):
            layer["self_attn"][name]["kernel"] = layer["self_attn"][name]["kernel"] * 8.0
    x = np.random.default_rng(0).integers(0, cfg.vocab_size, (1, cfg.context)).astype(np.int32)
    want = np.asarray(jax.jit(make_apply(cfg))(params, x))[0]
    state = hf_state_dict(params, cfg)
    write_gguf(tmp_path / "m.gguf", state, cfg, tok, "f32", "sharp")
    llm = Llama(model_path=str(tmp_path / "m.gguf"), n_ctx=cfg.context, n_batch=cfg.context, logits_all=True,
                verbose=False)
    llm.eval([int(t) for t in x[0]])
    np.testing.assert_allclose(np.asarray(llm.scores[:cfg.context]), want, atol=5e-2, rtol=1e-2)  # f16 cache
    session = ort.InferenceSession(build(state, cfg).SerializeToString(), providers=["CPUExecutionProvider"])
    past = {f"past_{k}_{i}": np.zeros((1, 2, 0, 32), np.float32) for i in range(2) for k in ("key", "value")}
    got = session.run(["logits"], {"input_ids": x.astype(np.int64), **past})[0][0]
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    assert np.abs(want[1:] - want[:-1]).max() > 1.0  # the logits do move with the position
