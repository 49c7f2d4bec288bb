"""Parts of the distillation loop on their own: the dev gain (`gain.dev_gains`), the next round's
mixture weights (`gain.next_weights`, `arms.size_weights`), and exact resume of a KD student
(cached teacher, augmented pools in the mixture) stopped past an epoch boundary, on two devices."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from tests.helpers import GL, ROOT, gl_lines
from lm.data import Packed, Pool, pack, token_stream
from lm.distill.arms import size_weights
from lm.distill.gain import dev_gains, next_weights
from lm.losses import cross_entropy
from lm.model import init_params, make_apply, preset
from lm.tokenizer import train_tokenizer


def test_next_weights_are_kept_fraction_times_positive_gain_with_a_floor() -> None:
    """Guards `next_weights`: kept fraction x dev gain (negative gains count as 0), normalised,
    every augmenter at least `floor` before the final normalisation; no positive product: equal
    weights."""
    w = next_weights({"a": 0.5, "b": 1.0, "c": 0.8, "d": 0.4}, {"a": 0.2, "b": 0.1, "c": -0.3})
    # raw a 0.1, b 0.1, c 0, d 0 (no gain) -> 0.5, 0.5, 0.02, 0.02 -> / 1.04
    assert w == {"a": round(0.5 / 1.04, 4), "b": round(0.5 / 1.04, 4), "c": round(0.02 / 1.04, 4),
                 "d": round(0.02 / 1.04, 4)}
    w = next_weights({"a": 0.9, "b": 0.3}, {"a": 0.1, "b": 0.1}, floor=0.0)
    assert w == {"a": 0.75, "b": 0.25}
    assert next_weights({"a": 0.5, "b": 0.5}, {"a": -0.1, "b": 0.0}) == {"a": 0.5, "b": 0.5}
    assert next_weights({}, {"a": 1.0}) == {}


def test_size_weights_follow_the_number_of_sequences() -> None:
    def pool(name: str, n: int) -> Pool:
        return Pool(name, Packed(np.zeros((n, 5), np.int32), np.ones((n, 4), np.float32)))
    assert size_weights([pool("a", 30), pool("b", 10)]) == {"a": 0.75, "b": 0.25}
    assert size_weights([]) == {}


def test_dev_gain_is_the_cosine_of_the_dev_and_pool_gradients() -> None:
    """Guards `dev_gains`: the cosine between the mean CE gradient on dev and on each pool (its
    `inputs` when noised): 1 for a pool of the dev text itself, lower for other text or for the
    dev targets read from other inputs, and equal to the cosine computed directly."""
    tok = train_tokenizer(gl_lines("train", 300), 512)
    cfg = preset("tiny", vocab_size=tok.vocab_size)
    params = init_params(cfg, 4)
    full = pack(token_stream(tok, ["\n".join(gl_lines("dev", 60))], None), cfg.context, tok.eos_id)
    dev = Packed(full.tokens[:8], full.mask[:8])  # 2 batches of 4, every mask full
    other = pack(token_stream(tok, ["\n".join(gl_lines("train", 60))], None), cfg.context, tok.eos_id)
    other = Packed(other.tokens[:8], other.mask[:8])
    rng = np.random.default_rng(0)
    garbled = rng.integers(3, tok.vocab_size, dev.tokens[:, :-1].shape).astype(np.int32)
    pools = [Pool("same", dev), Pool("other", other), Pool("garbled", dev, inputs=garbled)]
    assert dev.mask.all() and other.mask.all()
    gains = dev_gains(cfg, params, dev, pools, batch=4, seed=1, n_batches=2)
    apply = make_apply(cfg)
    flat = jax.jit(lambda x, y, m: ravel_pytree(jax.grad(lambda q: cross_entropy(apply(q, x), y, m))(params))[0])

    def grad(p: Packed, inputs: np.ndarray | None = None) -> np.ndarray:
        x = inputs if inputs is not None else p.tokens[:, :-1]
        return np.asarray(flat(x, p.tokens[:, 1:], p.mask), np.float64)

    g_dev = grad(dev)
    for name, g in (("other", grad(other)), ("garbled", grad(dev, garbled))):
        cos = float(g_dev @ g / (np.linalg.norm(g_dev) * np.linalg.norm(g)))
        assert gains[name] == pytest.approx(cos, abs=2e-4), name
    assert gains["same"] == pytest.approx(1.0, abs=2e-4)
    assert -1.0 <= min(gains.values()) and gains["other"] < 0.99 and gains["garbled"] < 0.99


RESUME = r'''
import json, sys
from pathlib import Path
import jax
import numpy as np
import orbax.checkpoint as ocp
from augment.noise import NoiseAugmenter
from lm.data import Batches, noised_pool, real_pool, text_pool
from lm.files import enable_compile_cache
from lm.distill.teacher_cache import TeacherCache
from lm.losses import LossConfig
from lm.model import init_params, make_apply, preset
from lm.tokenizer import train_tokenizer
from lm.trainer import LoopConfig, OptimConfig, Teacher, train

out, gl = Path(sys.argv[1]), Path(sys.argv[2])
enable_compile_cache()  # the three legs compile the same step: once
lines = lambda split: [x for x in (gl / f"{split}.txt").read_text(encoding="utf-8").split("\n") if x.strip()]
train_lines = lines("train")
tok = train_tokenizer(train_lines[:400], 512)
cfg = preset("tiny", vocab_size=tok.vocab_size)
tcfg = preset("tiny", vocab_size=tok.vocab_size, dim=64, hidden_dim=128)
tparams = init_params(tcfg, 11)
parents = train_lines[100:120]
noised = NoiseAugmenter("gl", ops=["typo", "swap"], rate=0.2).augment_batch(parents, 5)
pools = [real_pool(tok, train_lines[:12], cfg.context, None),
         noised_pool("noise", tok, [(p, v[0]) for p, v in zip(parents, noised) if v], cfg.context, "\n"),
         text_pool("text", tok, lines("dev")[:20], cfg.context, "\n")]
loss = LossConfig(alpha=0.4, temperature=2.0, kl="reverse", top_k=8, tail="bucket")

def data():
    return Batches(pools[0], 8, 3, pools[1:], {"noise": 0.4, "text": 0.6}, share=0.5)

epoch = data().epoch_size
stop = epoch // 8 + 2            # two steps past the first epoch boundary
total = stop + 5

def leg(folder, steps):
    d = data()
    cache = TeacherCache(folder, "teacher@0", 8, 2.0, make_apply(tcfg), tparams)
    train(folder, cfg, OptimConfig(lr=3e-3, warmup=2, decay_steps=total),
          LoopConfig(steps=steps, batch=8, eval_every=100, save_every=100, log_every=4, quiet=True),
          d, None, seed=5, loss=loss, teacher=Teacher(cache=cache))
    return d.state()

stopped = leg(out / "split", stop)
resumed = leg(out / "split", total)
straight = leg(out / "straight", total)
ck = ocp.StandardCheckpointer()
a = ck.restore((out / "split" / "checkpoints" / str(total) / "state").resolve())
b = ck.restore((out / "straight" / "checkpoints" / str(total) / "state").resolve())
la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
d = data()
rows = [d.next() for _ in range(total)]
print(json.dumps({"devices": jax.device_count(), "epoch_size": epoch, "n_aug": d.n_aug, "stop": stop, "total": total,
                  "stopped": stopped, "resumed": resumed, "straight": straight, "leaves": len(la),
                  "same_structure": jax.tree.structure(a) == jax.tree.structure(b),
                  "unequal": sum(not np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb)),
                  "pools_read": sorted({int(k) for r in rows for k in r.pools})}))
'''


def test_kd_student_resumes_exactly_past_an_epoch_boundary_on_two_devices(tmp_path: Path) -> None:
    """Guards exact resume where the earlier tests do not reach: a KD student (top-k teacher
    cache, reverse KL) on real text plus a noised and a text pool, on two forced CPU devices,
    stopped two steps after its first epoch boundary and resumed in a new process state (new
    data, new cache object): its parameters and optimiser state equal a straight run's, bitwise."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    proc = subprocess.run([sys.executable, "-c", RESUME, str(tmp_path), str(GL)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["devices"] == 2 and got["pools_read"] == [0, 1, 2] and got["n_aug"] > 0
    assert got["stopped"]["epoch"] == 1 and got["stopped"]["index"] > 0  # past the boundary, not on it
    assert got["resumed"] == got["straight"] and got["resumed"]["epoch"] >= 1
    assert got["same_structure"] and got["leaves"] > 10 and got["unequal"] == 0
