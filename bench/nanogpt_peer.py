"""The peer: a PyTorch character-level GPT trained with nanoGPT's published CPU recipe.

Written here from nanoGPT's published configuration (README's "baby GPT" CPU command over
`config/train_shakespeare_char.py`): 4 layers, 4 heads, 128 wide, context 64, batch 12, 2,000
iterations, AdamW (betas 0.9/0.99, weight decay 0.1 on matrices), learning rate 1e-3 with 100
warm-up iterations and cosine decay to 1e-4 at iteration 2,000, gradient clipping at 1.0, dropout
0, no biases, LayerNorm, GELU MLP 4x, tied embeddings, N(0, 0.02) initialisation (residual
projections 0.02 / sqrt(2 x layers)). Data as nanoGPT's `prepare.py` makes it: the vocabulary is
every character of input.txt (65), train = the first 90%, val = the last 10%; batches are random
64-character blocks of train (seed 1337). It reports val loss as nanoGPT prints it (the mean over
20 random batches at the last iteration) and exposes the trained model's per-position NLL for the
bench's own estimators (`bench/equal_terms.py`).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass(frozen=True)
class Recipe:
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    batch_size: int = 12
    max_iters: int = 2000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int = 2000
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0
    eval_iters: int = 20
    seed: int = 1337


def lr_at(it: int, r: Recipe) -> float:
    """nanoGPT's schedule: linear warm-up, cosine decay to min_lr, then min_lr."""
    if it < r.warmup_iters:
        return r.lr * (it + 1) / (r.warmup_iters + 1)
    if it > r.lr_decay_iters:
        return r.min_lr
    ratio = (it - r.warmup_iters) / (r.lr_decay_iters - r.warmup_iters)
    return r.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (r.lr - r.min_lr)


def build_model(vocab: int, r: Recipe) -> Any:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class LayerNorm(nn.Module):
        def __init__(self, n: int):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(n))

        def forward(self, x):
            return F.layer_norm(x, self.weight.shape, self.weight, None, 1e-5)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            n = r.n_embd
            self.ln_1, self.ln_2 = LayerNorm(n), LayerNorm(n)
            self.c_attn, self.attn_proj = nn.Linear(n, 3 * n, bias=False), nn.Linear(n, n, bias=False)
            self.c_fc, self.mlp_proj = nn.Linear(n, 4 * n, bias=False), nn.Linear(4 * n, n, bias=False)

        def forward(self, x):
            b, t, c = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
            q, k, v = (z.view(b, t, r.n_head, c // r.n_head).transpose(1, 2) for z in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.attn_proj(y.transpose(1, 2).contiguous().view(b, t, c))
            return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))

    class CharGPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab, r.n_embd), nn.Embedding(r.block_size, r.n_embd)
            self.blocks = nn.ModuleList(Block() for _ in range(r.n_layer))
            self.ln_f = LayerNorm(r.n_embd)
            self.lm_head = nn.Linear(r.n_embd, vocab, bias=False)
            self.lm_head.weight = self.wte.weight  # tied, as nanoGPT
            for name, p in self.named_parameters():
                if p.dim() >= 2:
                    std = 0.02 / math.sqrt(2 * r.n_layer) if name.endswith("proj.weight") else 0.02
                    nn.init.normal_(p, 0.0, std)

        def forward(self, idx):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
            for blk in self.blocks:
                x = blk(x)
            return self.lm_head(self.ln_f(x))

    return CharGPT()


def encode_chars(text: str, vocab: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(vocab)}
    return np.asarray([index[c] for c in text], np.int64)


def train_peer(full_text: str, r: Recipe = Recipe(), threads: int | None = None,
               progress: Callable[[int, float], None] | None = None) -> dict[str, Any]:
    """Train on nanoGPT's split of `full_text` (input.txt); returns the model, its vocabulary,
    the wall time of training and nanoGPT's own printed val loss (eval_iters batches, last iteration)."""
    import torch
    import torch.nn.functional as F

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(r.seed)
    vocab = sorted(set(full_text))
    data = encode_chars(full_text, vocab)
    n = int(0.9 * len(data))
    train, val = torch.from_numpy(data[:n]), torch.from_numpy(data[n:])
    model = build_model(len(vocab), r)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": r.weight_decay}, {"params": other, "weight_decay": 0.0}],
                            lr=r.lr, betas=r.betas)

    def batch(split: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ix = torch.randint(len(split) - r.block_size, (r.batch_size,))
        x = torch.stack([split[i:i + r.block_size] for i in ix])
        return x, torch.stack([split[i + 1:i + 1 + r.block_size] for i in ix])

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))

    start = time.perf_counter()
    val_loss = math.nan
    for it in range(r.max_iters + 1):  # nanoGPT runs iterations 0..max_iters
        for group in opt.param_groups:
            group["lr"] = lr_at(it, r)
        if it == r.max_iters:  # nanoGPT's estimate_loss at the last iteration: what it prints
            model.eval()
            with torch.no_grad():
                val_loss = float(np.mean([loss_of(*batch(val)).item() for _ in range(r.eval_iters)]))
            model.train()
        loss = loss_of(*batch(train))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), r.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if progress and it % 100 == 0:
            progress(it, loss.item())
    wall = time.perf_counter() - start
    model.eval()
    return {"model": model, "vocab": vocab, "wall_s": wall, "nanogpt_val_loss": val_loss,
            "params": sum(p.numel() for p in model.parameters()), "train_chars": n, "recipe": r}


def nll_fn(model: Any) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """[B, L] inputs, targets (character ids) -> [B, L] nats, as `lm.scoring` expects of a model."""
    import torch
    import torch.nn.functional as F

    def nll(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            logits = model(torch.from_numpy(np.asarray(x, np.int64)))
            out = F.cross_entropy(logits.transpose(1, 2), torch.from_numpy(np.asarray(y, np.int64)), reduction="none")
        return out.numpy()
    return nll
