"""Command options that no other test runs, each with the smallest check that fails when the option
stops doing what it says: `lm.train --tokenizer --untied --dtype --save-every`, `lm.evaluate
--stride --checkpoint`, `lm.ship.export --float-embeddings` and `lm.ship.deploy --hf-generate`.

One 4-step tiny run (`opts_run`) carries every `lm.train` option at once; its dev losses are made
to rise, so its best checkpoint (step 2) is not its last (step 4)."""
from __future__ import annotations

import contextlib
import io
import json
import subprocess
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from lm.checkpoint import BEST_DIR, RESUME_DIR, Checkpoints
from lm.corpus import open_snapshot
from lm.evaluate import main as eval_main
from lm.loader import load_model
from lm.model import make_apply, preset
from lm.ship.export import main as export_main
from lm.tokenizer import train_tokenizer
from lm.train import main as train_main
from tests.helpers import TINY, corpora, tiny_run


@pytest.fixture(scope="module")
def opts_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """`lm.train --tokenizer bpe --untied --dtype bfloat16 --save-every 3 --eval-every 2 --steps 4`,
    with the dev loss of every evaluation made higher than the last; returns the run folder and
    the (checkpoint folder, step) of every save."""
    import lm.trainer
    out = tmp_path_factory.mktemp("opts") / "run"
    saves: list[tuple[str, int]] = []
    evals = iter(range(1, 100))
    real_eval, real_save = lm.trainer.block_eval, Checkpoints.save

    def rising_eval(*args: Any, **kw: Any) -> tuple[float, int]:
        nll, n = real_eval(*args, **kw)
        return nll * next(evals), n  # every evaluation worse than the one before

    def recorded_save(self: Checkpoints, which: str, step: int, arrays: Any, meta: Any) -> None:
        saves.append((which, step))
        real_save(self, which, step, arrays, meta)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lm.trainer, "block_eval", rising_eval)
        mp.setattr(Checkpoints, "save", recorded_save)
        assert train_main(["--corpus", str(corpora(tmp_path_factory)["gl"]), *TINY, "--steps", "4",
                           "--eval-every", "2", "--save-every", "3", "--tokenizer", "bpe", "--untied",
                           "--dtype", "bfloat16", "--out", str(out)]) == 0
    return {"out": out, "saves": saves, "info": json.loads((out / "run.json").read_text())}


def test_train_tokenizer_bpe_trains_a_bpe_model(opts_run: dict[str, Any],
                                                tmp_path_factory: pytest.TempPathFactory) -> None:
    assert opts_run["info"]["tokenizer"]["type"] == "bpe"
    # the file itself: training is deterministic, so it is byte for byte the BPE model of the train split
    train = open_snapshot(corpora(tmp_path_factory)["gl"]).documents("train")
    assert (opts_run["out"] / "tokenizer.model").read_bytes() == train_tokenizer(train, None, "bpe").model


def test_train_untied_has_its_own_output_layer(opts_run: dict[str, Any]) -> None:
    info = opts_run["info"]
    tied = preset("tiny", vocab_size=info["model"]["vocab_size"])
    assert info["model"]["tie_embeddings"] is False
    assert info["params"] == tied.n_params() + tied.vocab_size * tied.dim  # one more [vocab, dim] matrix
    params = load_model(opts_run["out"]).params
    head, emb = np.asarray(params["lm_head"]["kernel"]), np.asarray(params["embed_tokens"]["embedding"])
    assert head.shape == emb.T.shape and not np.allclose(head, emb.T)


def test_train_dtype_bfloat16_is_the_compute_dtype(opts_run: dict[str, Any]) -> None:
    assert opts_run["info"]["model"]["dtype"] == "bfloat16"
    model = load_model(opts_run["out"])
    assert model.cfg.dtype == "bfloat16"
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(model.params))  # stored float32
    x = np.random.default_rng(0).integers(0, model.cfg.vocab_size, (2, model.context + 1)).astype(np.int32)
    got = model.nll(x[:, :-1], x[:, 1:])
    f32 = np.asarray(jax.jit(make_apply(model.cfg.replace(dtype="float32")))(model.params, x[:, :-1]))
    ref = -np.take_along_axis(jax.nn.log_softmax(f32), x[:, 1:, None], -1)[..., 0]
    assert 1e-4 < np.max(np.abs(got - ref)) < 0.1  # computed in bfloat16: close to float32, not equal


def test_train_save_every_checkpoints_at_its_multiples(opts_run: dict[str, Any]) -> None:
    # --save-every 3 with --eval-every 2: state at 3 and at the end, not at the evaluations
    assert [s for which, s in opts_run["saves"] if which == RESUME_DIR] == [3, 4]
    assert [s for which, s in opts_run["saves"] if which == BEST_DIR] == [2]  # dev got worse after 2


def test_evaluate_checkpoint_last_and_best_load_different_steps(opts_run: dict[str, Any], capsys) -> None:
    results = {}
    for which in ("best", "last"):
        capsys.readouterr()
        assert eval_main([str(opts_run["out"]), "--split", "test", "--checkpoint", which, "--json"]) == 0
        results[which] = json.loads(capsys.readouterr().out)
    assert results["best"]["checkpoint"] == "best/2" and results["last"]["checkpoint"] == "checkpoints/4"
    assert results["best"]["chars"] == results["last"]["chars"]
    assert results["best"]["bits_per_char"] != results["last"]["bits_per_char"]


def test_evaluate_stride_changes_the_windows(tmp_path_factory: pytest.TempPathFactory, capsys) -> None:
    run = tiny_run(tmp_path_factory)
    results = {}
    for stride in ([], ["--stride", "4"]):
        capsys.readouterr()
        assert eval_main([str(run), "--split", "test", "--json", *stride]) == 0
        results[len(stride)] = json.loads(capsys.readouterr().out)
    default, four = results[0], results[2]
    assert default["stride"] == 16 and four["stride"] == 4
    assert four["chars"] == default["chars"] and four["tokens"] == default["tokens"]  # each token once
    assert four["nll_bits"] != default["nll_bits"]  # other windows, other context


def test_export_float_embeddings_keeps_the_embedding_float32(tmp_path_factory: pytest.TempPathFactory,
                                                              tmp_path: Path) -> None:
    run = tiny_run(tmp_path_factory)
    for flag, out in (([], tmp_path / "int8"), (["--float-embeddings"], tmp_path / "float-emb")):
        assert export_main([str(run), "--format", "int8", "--out", str(out), *flag]) == 0
    quant = load_file(str(tmp_path / "int8" / "model.safetensors"))
    keep = load_file(str(tmp_path / "float-emb" / "model.safetensors"))
    assert quant["embed_tokens.embedding.q"].dtype == np.int8 and "embed_tokens.embedding" not in quant
    assert keep["embed_tokens.embedding"].dtype == np.float32 and "embed_tokens.embedding.q" not in keep
    emb = np.asarray(load_model(run).params["embed_tokens"]["embedding"])
    assert np.array_equal(keep["embed_tokens.embedding"], emb)  # the run's own values
    assert keep["layers.0.mlp.up_proj.kernel.q"].dtype == np.int8  # the rest is int8 all the same
    assert json.loads((tmp_path / "float-emb" / "export.json").read_text())["int8_embeddings"] is False


def test_deploy_hf_generate_measures_transformers_generate(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The probes run in this process (the subprocess is the only thing faked): our own engine's
    rows and the bits per character get stand-ins (ship/test_export.py's deploy test measures them),
    the `--hf-generate` row runs `model.generate()` of transformers on the hf export."""
    from transformers.generation.utils import GenerationMixin

    import lm.scoring
    from lm.ship import deploy
    engines: list[tuple[str, str]] = []
    generated: list[int] = []
    real_generate = GenerationMixin.generate

    def counting_generate(self: Any, *args: Any, **kw: Any) -> Any:
        generated.append(kw["max_new_tokens"])
        return real_generate(self, *args, **kw)

    real_run = subprocess.run

    def in_process(cmd: Any, **kw: Any) -> subprocess.CompletedProcess:
        if list(cmd[1:3]) != ["-m", "lm.ship.deploy"]:
            return real_run(cmd, **kw)
        argv = list(cmd[3:])  # --probe MODEL --tokens N --prompt P --engine E
        engine = argv[argv.index("--engine") + 1]
        engines.append((Path(argv[argv.index("--probe") + 1]).name, engine))
        if engine in ("ours", "native"):
            stand_in = {"load_s": 0.1, "time_to_first_token_s": 0.1, "tokens_per_second": 1.0,
                        "peak_rss_mb": 1.0, "runtime_rss_mb": 1.0}
            return subprocess.CompletedProcess(cmd, 0, json.dumps(stand_in) + "\n", "")
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = deploy.main(argv)
        return subprocess.CompletedProcess(cmd, code, buf.getvalue(), "")

    monkeypatch.setattr(GenerationMixin, "generate", counting_generate)
    monkeypatch.setattr(lm.scoring, "evaluate", lambda *a, **kw: {"bits_per_char": 2.0})
    monkeypatch.setattr(deploy.subprocess, "run", in_process)
    out = tmp_path / "deploy"
    assert deploy.main([str(tiny_run(tmp_path_factory)), "--out", str(out), "--sparsity", "--tokens", "16",
                        "--threads", "1", "--hf-generate"]) == 0
    assert engines == [("gl-tiny", "ours"), ("hf", "ours"), ("int8", "ours"), ("int8-float-emb", "ours"),
                       *((name, "native") for name in ("gguf-f32", "gguf-q8_0", "onnx-f32", "onnx-int8")),
                       ("hf", "hf-generate")]
    assert generated == [1, 4, 1, 16]  # warm-up, then the first token alone and the whole generation
    rows = {r["artefact"]: r for r in json.loads((out / "deploy.json").read_text())["artefacts"]}
    row = rows["hf (model.generate)"]
    assert row["engine"] == "transformers + PyTorch" and row["path"] == str(out / "hf")
    # measured (tokens/s may be None: 15 tiny-model tokens can time shorter than the first one alone)
    assert row["threads_1"]["time_to_first_token_s"] > 0 and "tokens_per_second" in row["threads_1"]
    assert "| hf (model.generate) | transformers + PyTorch |" in (out / "deploy.md").read_text()


def test_deploy_table_shows_a_probe_without_a_speed() -> None:
    """A probe's tokens/s is None when the whole generation timed no longer than its first token
    (`--hf-generate` times them as two calls of `model.generate()`): the table says "-"."""
    from lm.ship.deploy import markdown
    probe = {"time_to_first_token_s": 0.01, "tokens_per_second": None, "peak_rss_mb": 9.0, "runtime_rss_mb": 8.0}
    doc = {"run": "RUN", "corpus": "C", "tokens": 4, "prompt": "A ", "cpus": 2,
           "artefacts": [{"artefact": "hf (model.generate)", "engine": "transformers + PyTorch", "weights_bytes": 1,
                          "folder_bytes": 2, "threads_1": probe, "threads_all": probe}]}
    assert "| hf (model.generate) | transformers + PyTorch | 0.00 | 0.00 | - | 10.0 / 10.0 | - | - | 9 (8) |" \
        in markdown(doc)
