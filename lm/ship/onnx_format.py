"""Our models in ONNX Runtime's terms: the Llama forward as an ONNX graph with a key/value cache.

Built node by node with `onnx.helper` from the Hugging Face tensors (`hf_format.hf_state_dict`),
standard operators only (opset 18), so any ONNX runtime runs it; ONNX Runtime fuses the
RMSNorm and attention patterns itself. One graph serves the prompt and each step:

* inputs: `input_ids` int64 [B, S]; `past_key_N`, `past_value_N` float32 [B, H, P, D] per layer
  (P = 0 for a prompt);
* outputs: `logits` float32 [B, S, V]; `present_key_N`, `present_value_N` [B, H, P + S, D].

Positions run from P; the rotary tables (rotate-half, as ours) are initialisers of `context`
rows, so P + S may not exceed the context (the caller shifts, `lm.runtimes.ShiftingDecoder`).
`int8`: ONNX Runtime's own dynamic quantisation (`quantize_dynamic`, int8 weights per
output channel, activations quantised at run time) of every MatMul and of the embedding.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lm.errors import UsageError
from lm.model import ModelConfig

QUANTS = ("f32", "int8")
OPSET = 18


class Graph:
    """Nodes and initialisers, with fresh names."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.inits: list = []
        self.n = 0

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, kind: str, *inputs: str, outputs: int = 1, name: str | None = None, **attrs) -> str | list[str]:
        from onnx import helper
        self.n += 1
        outs = [name] if name else [f"{kind.lower()}_{self.n}_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(kind, list(inputs), outs, name=f"{kind}_{self.n}", **attrs))
        return outs[0] if outputs == 1 else outs


def rope_tables(cfg: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin, [context, head_dim], rotate-half layout (`lm.model.rope_tables`)."""
    inv = 1.0 / (cfg.rope_theta ** (np.arange(0, cfg.head_dim, 2, dtype=np.float64) / cfg.head_dim))
    ang = np.arange(cfg.context, dtype=np.float64)[:, None] * inv[None, :]
    ang = np.concatenate([ang, ang], axis=-1)
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


class Forward:
    """The forward's nodes, added to a `Graph`: positions and mask from the inputs' shapes, then
    the layers; every weight becomes an initialiser under its Hugging Face name."""

    def __init__(self, g: Graph, state: dict[str, np.ndarray], cfg: ModelConfig):
        self.g, self.state, self.cfg = g, state, cfg
        i64 = lambda *v: np.asarray(v, np.int64)  # noqa: E731
        self.axes_last, self.zero, self.one = g.const("axes_last", i64(-1)), g.const("zero", i64(0)), g.const("one", i64(1))
        self.eps = g.const("eps", np.asarray(cfg.norm_eps, np.float32))
        self.scale = g.const("scale", np.asarray(1.0 / np.sqrt(cfg.head_dim), np.float32))
        self.heads_shape = g.const("heads_shape", i64(0, 0, cfg.n_heads, cfg.head_dim))
        self.model_shape = g.const("model_shape", i64(0, 0, cfg.dim))
        self.half = g.const("half", i64(cfg.head_dim // 2, cfg.head_dim // 2))
        self.positions()

    def scalar(self, x: str) -> str:
        return self.g.op("Squeeze", x, self.zero)

    def positions(self) -> None:
        """Rotary rows and the causal mask for positions P .. P + S - 1 against keys 0 .. P + S - 1."""
        g = self.g
        past = g.op("Gather", g.op("Shape", "past_key_0"), g.const("axis_2", np.asarray([2])), axis=0)  # [1]
        total = g.op("Add", past, g.op("Gather", g.op("Shape", "input_ids"), self.one, axis=0))
        pos = g.op("Range", self.scalar(past), self.scalar(total), self.scalar(self.one))
        cos_t, sin_t = (g.const(n, t) for n, t in zip(("rope_cos", "rope_sin"), rope_tables(self.cfg)))
        self.cos, self.sin = g.op("Gather", cos_t, pos, axis=0), g.op("Gather", sin_t, pos, axis=0)  # [S, D]
        keys = g.op("Range", self.scalar(self.zero), self.scalar(total), self.scalar(self.one))
        allowed = g.op("LessOrEqual", g.op("Unsqueeze", keys, self.zero), g.op("Unsqueeze", pos, self.one))
        self.mask = g.op("Where", allowed, g.const("zero_f", np.asarray(0.0, np.float32)),
                         g.const("neg_inf", np.asarray(-1e9, np.float32)))  # [S, P + S]

    def weight(self, name: str) -> str:  # torch [out, in] -> ONNX MatMul's [in, out]
        return self.g.const(name, self.state[name].T)

    def rms(self, x: str, w: str) -> str:
        g = self.g
        var = g.op("ReduceMean", g.op("Mul", x, x), self.axes_last, keepdims=1)
        return g.op("Mul", g.op("Div", x, g.op("Sqrt", g.op("Add", var, self.eps))), g.const(w, self.state[w]))

    def heads(self, x: str, rotate: bool) -> str:
        """[B, S, dim] -> [B, H, S, D], rotated (x cos + rotate_half(x) sin) for q and k."""
        g = self.g
        x = g.op("Transpose", g.op("Reshape", x, self.heads_shape), perm=[0, 2, 1, 3])
        if not rotate:
            return x
        x1, x2 = g.op("Split", x, self.half, axis=-1, outputs=2)
        rot = g.op("Concat", g.op("Neg", x2), x1, axis=-1)
        return g.op("Add", g.op("Mul", x, self.cos), g.op("Mul", rot, self.sin))

    def layer(self, x: str, i: int) -> str:
        g, pre = self.g, f"model.layers.{i}."
        h = self.rms(x, pre + "input_layernorm.weight")
        q, k, v = (g.op("MatMul", h, self.weight(pre + f"self_attn.{n}.weight")) for n in ("q_proj", "k_proj", "v_proj"))
        k = g.op("Concat", f"past_key_{i}", self.heads(k, True), axis=2, name=f"present_key_{i}")
        v = g.op("Concat", f"past_value_{i}", self.heads(v, False), axis=2, name=f"present_value_{i}")
        att = g.op("MatMul", self.heads(q, True), g.op("Transpose", k, perm=[0, 1, 3, 2]))
        att = g.op("Softmax", g.op("Add", g.op("Mul", att, self.scale), self.mask), axis=-1)
        ctx = g.op("Reshape", g.op("Transpose", g.op("MatMul", att, v), perm=[0, 2, 1, 3]), self.model_shape)
        x = g.op("Add", x, g.op("MatMul", ctx, self.weight(pre + "self_attn.o_proj.weight")))
        h = self.rms(x, pre + "post_attention_layernorm.weight")
        gate = g.op("MatMul", h, self.weight(pre + "mlp.gate_proj.weight"))
        up = g.op("MatMul", h, self.weight(pre + "mlp.up_proj.weight"))
        act = g.op("Mul", g.op("Mul", gate, g.op("Sigmoid", gate)), up)
        return g.op("Add", x, g.op("MatMul", act, self.weight(pre + "mlp.down_proj.weight")))


def build(state: dict[str, np.ndarray], cfg: ModelConfig):
    """The ModelProto of the forward with a cache."""
    from onnx import TensorProto, helper

    g = Graph()
    f = Forward(g, state, cfg)
    x = g.op("Gather", g.const("model.embed_tokens.weight", state["model.embed_tokens.weight"]), "input_ids", axis=0)
    for i in range(cfg.n_layers):
        x = f.layer(x, i)
    head = state.get("lm_head.weight", state["model.embed_tokens.weight"])  # tied: the embedding
    g.op("MatMul", f.rms(x, "model.norm.weight"), g.const("lm_head", head.T), name="logits")

    f32 = TensorProto.FLOAT
    cache = lambda n, p: helper.make_tensor_value_info(n, f32, ["batch", cfg.n_heads, p, cfg.head_dim])  # noqa: E731
    names = [f"{{}}_{kind}_{i}" for i in range(cfg.n_layers) for kind in ("key", "value")]
    inputs = [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])]
    inputs += [cache(n.format("past"), "past") for n in names]
    outs = [helper.make_tensor_value_info("logits", f32, ["batch", "seq", cfg.vocab_size])]
    outs += [cache(n.format("present"), "total") for n in names]
    graph = helper.make_graph(g.nodes, "llama", inputs, outs, initializer=g.inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="scarce-lm")


def write_onnx(path: Path, state: dict[str, np.ndarray], cfg: ModelConfig, quant: str) -> None:
    import onnx

    if quant not in QUANTS:
        raise UsageError(f"--quant must be one of {', '.join(QUANTS)} for onnx, not {quant!r}")
    model = build(state, cfg)
    onnx.checker.check_model(model)
    if quant == "f32":
        onnx.save(model, str(path))
        return
    from onnxruntime.quantization import QuantType, quantize_dynamic
    src = path.with_name(path.stem + ".f32.onnx")
    onnx.save(model, str(src))
    try:
        quantize_dynamic(str(src), str(path), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul", "Gather"])
    finally:
        src.unlink(missing_ok=True)
