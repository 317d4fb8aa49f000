"""Built-in decoder models (no downloads): a Llama-style and a GPT-2-style decoder.

Both take token ids and return logits. With a KV cache (`decode_step`) they run one new token per
step against a fixed-size cache (the static-shape way Neuron serves decoders): the new key/value is
written at `pos` with index_copy and attention is masked to positions <= pos.
Weights are random from a fixed seed.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

# Activation checkpointing, as NeuronX Distributed offers it (its developer guide for activation memory
# reduction, https://awsdocs-neuron.readthedocs-hosted.com/en/v1.12.0/libraries/neuronx-distributed/developer-guide.html;
# selective recomputation from Korthikanti et al., https://arxiv.org/abs/2205.05198):
# "none" saves every activation backward needs; "selective" (NxD's default) recomputes the attention
# core (scores, softmax, weighted sum) in backward; "full" recomputes each whole decoder block from its input.
CHECKPOINTING = ("none", "selective", "full")


@dataclass(frozen=True)
class DecoderConfig:
    kind: str                 # "llama" | "gpt2"
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    max_seq: int = 4096
    rope_theta: float = 500000.0
    eps: float = 1e-5
    tie_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def params(self) -> int:
        """Parameter count (embeddings included)."""
        h, i, d = self.hidden, self.intermediate, self.head_dim
        attn = h * (self.heads * d) + 2 * h * (self.kv_heads * d) + (self.heads * d) * h
        if self.kind == "llama":
            mlp, norms = 3 * h * i, 2 * h
        else:
            attn += 3 * h + h            # qkv and proj biases
            mlp, norms = 2 * h * i + i + h, 4 * h
        emb = self.vocab * h + (0 if self.kind == "llama" else self.max_seq * h)
        head = 0 if self.tie_embeddings else self.vocab * h
        return emb + self.layers * (attn + mlp + norms) + head + (h if self.kind == "llama" else 2 * h)


CONFIGS = {
    # tiny: for tests and the demo (a few ms of simulation per op)
    "llama-tiny": DecoderConfig("llama", vocab=512, hidden=256, layers=2, heads=4, kv_heads=2,
                                intermediate=512, max_seq=512),
    "gpt2-tiny": DecoderConfig("gpt2", vocab=512, hidden=256, layers=2, heads=4, kv_heads=4,
                               intermediate=1024, max_seq=512, eps=1e-5, tie_embeddings=True),
    # real sizes (HF config.json of Llama-3-8B and GPT-2 small)
    "llama-3-8b": DecoderConfig("llama", vocab=128256, hidden=4096, layers=32, heads=32, kv_heads=8,
                                intermediate=14336, max_seq=8192),
    "llama-8b-layer": DecoderConfig("llama", vocab=128256, hidden=4096, layers=1, heads=32, kv_heads=8,
                                    intermediate=14336, max_seq=8192),
    "llama-1b": DecoderConfig("llama", vocab=128256, hidden=2048, layers=16, heads=32, kv_heads=8,
                              intermediate=8192, max_seq=8192, tie_embeddings=True),
    "gpt2": DecoderConfig("gpt2", vocab=50257, hidden=768, layers=12, heads=12, kv_heads=12,
                          intermediate=3072, max_seq=1024, tie_embeddings=True),
}


# --- Llama ----------------------------------------------------------------------------------------
class RMSNorm(nn.Module):
    """As written by common model code (Llama reference / HF LlamaRMSNorm)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        var = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(var + self.eps))


def rope_tables(cfg: DecoderConfig, positions: torch.Tensor):
    steps = torch.arange(0, cfg.head_dim, 2, dtype=torch.float32, device=positions.device)
    inv_freq = 1.0 / (cfg.rope_theta ** (steps / cfg.head_dim))
    freqs = positions.to(torch.float32)[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x, cos, sin):
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return x * cos + rotate_half(x) * sin


class _Block(nn.Module):
    """What both decoder blocks share: the causal attention core, recomputed in backward when
    `recompute_attention` is set (selective checkpointing)."""
    recompute_attention = False

    def _attend(self, q, k, v, **kw):
        attend = functools.partial(F.scaled_dot_product_attention, is_causal=True, **kw)
        if self.recompute_attention and torch.is_grad_enabled():
            return checkpoint(attend, q, k, v, use_reentrant=False)
        return attend(q, k, v)


class LlamaBlock(_Block):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        h, d = cfg.hidden, cfg.head_dim
        self.cfg = cfg
        self.attn_norm = RMSNorm(h, cfg.eps)
        self.q_proj = nn.Linear(h, cfg.heads * d, bias=False)
        self.k_proj = nn.Linear(h, cfg.kv_heads * d, bias=False)
        self.v_proj = nn.Linear(h, cfg.kv_heads * d, bias=False)
        self.o_proj = nn.Linear(cfg.heads * d, h, bias=False)
        self.mlp_norm = RMSNorm(h, cfg.eps)
        self.gate_proj = nn.Linear(h, cfg.intermediate, bias=False)
        self.up_proj = nn.Linear(h, cfg.intermediate, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate, h, bias=False)

    def forward(self, x, cos, sin, cache=None, pos=None, mask=None):
        cfg = self.cfg
        b, s, _ = x.shape
        hx = self.attn_norm(x)
        q = self.q_proj(hx).view(b, s, cfg.heads, cfg.head_dim).transpose(1, 2)
        k = self.k_proj(hx).view(b, s, cfg.kv_heads, cfg.head_dim).transpose(1, 2)
        v = self.v_proj(hx).view(b, s, cfg.kv_heads, cfg.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is None:
            a = self._attend(q, k, v, enable_gqa=True)
            new_cache = None
        else:
            ck, cv = cache
            ck, cv = ck.index_copy(2, pos, k), cv.index_copy(2, pos, v)
            a = F.scaled_dot_product_attention(q, ck, cv, attn_mask=mask, enable_gqa=True)
            new_cache = (ck, cv)
        x = x + self.o_proj(a.transpose(1, 2).reshape(b, s, cfg.heads * cfg.head_dim))
        hx = self.mlp_norm(x)
        x = x + self.down_proj(F.silu(self.gate_proj(hx)) * self.up_proj(hx))
        return x, new_cache


# --- GPT-2 ----------------------------------------------------------------------------------------
class GPT2Block(_Block):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        h = cfg.hidden
        self.cfg = cfg
        self.ln_1 = nn.LayerNorm(h, eps=cfg.eps)
        self.c_attn = nn.Linear(h, 3 * h)
        self.c_proj = nn.Linear(h, h)
        self.ln_2 = nn.LayerNorm(h, eps=cfg.eps)
        self.c_fc = nn.Linear(h, cfg.intermediate)
        self.mlp_proj = nn.Linear(cfg.intermediate, h)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x, cos=None, sin=None, cache=None, pos=None, mask=None):
        cfg = self.cfg
        b, s, h = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(h, dim=2)
        q, k, v = (t.view(b, s, cfg.heads, cfg.head_dim).transpose(1, 2) for t in (q, k, v))
        if cache is None:
            a = self._attend(q, k, v)
            new_cache = None
        else:
            ck, cv = cache
            ck, cv = ck.index_copy(2, pos, k), cv.index_copy(2, pos, v)
            a = F.scaled_dot_product_attention(q, ck, cv, attn_mask=mask)
            new_cache = (ck, cv)
        x = x + self.dropout(self.c_proj(a.transpose(1, 2).reshape(b, s, h)))
        mlp = self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))
        return x + self.dropout(mlp), new_cache


# --- the decoder ----------------------------------------------------------------------------------
class Decoder(nn.Module):
    """forward(input_ids [B, S]) -> logits [B, S, vocab]."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab, cfg.hidden)
        if cfg.kind == "gpt2":
            self.pos_embed = nn.Embedding(cfg.max_seq, cfg.hidden)
            self.final_norm = nn.LayerNorm(cfg.hidden, eps=cfg.eps)
        else:
            self.final_norm = RMSNorm(cfg.hidden, cfg.eps)
        block = LlamaBlock if cfg.kind == "llama" else GPT2Block
        self.blocks = nn.ModuleList(block(cfg) for _ in range(cfg.layers))
        self.lm_head = nn.Linear(cfg.hidden, cfg.vocab, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    def _embed(self, ids, positions):
        x = self.embed(ids)
        if self.cfg.kind == "gpt2":
            x = x + self.pos_embed(positions)
        return x

    def forward(self, input_ids):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self._embed(input_ids, positions)
        cos, sin = rope_tables(self.cfg, positions) if self.cfg.kind == "llama" else (None, None)
        for blk in self.blocks:
            x = run_block(blk, x, cos, sin)
        return self.lm_head(self.final_norm(x))


def run_block(blk, x, cos, sin):
    """One decoder block in prefill/training; the whole block is recomputed in backward when the
    block is marked for full checkpointing."""
    if getattr(blk, "recompute_block", False) and torch.is_grad_enabled():
        return checkpoint(blk, x, cos, sin, use_reentrant=False)[0]
    return blk(x, cos, sin)[0]


def set_checkpointing(model: nn.Module, mode: str) -> nn.Module:
    """Mark every decoder block of `model` for activation checkpointing `mode` (see CHECKPOINTING)."""
    if mode not in CHECKPOINTING:
        raise ValueError(f"checkpointing={mode!r}; valid: {', '.join(CHECKPOINTING)}")
    for blk in model.modules():
        if isinstance(blk, _Block):
            blk.recompute_block = mode == "full"
            blk.recompute_attention = mode == "selective"
    return model


class DecodeStep(nn.Module):
    """One token per sequence against a fixed-size KV cache.

    forward(ids [B,1], pos [1] int64, mask [1,1,1,T] additive, k0, v0, k1, v1, ...) with per-layer
    caches [B,Hkv,T,D] -> (logits [B,1,vocab], k0', v0', ...) with position `pos` filled in.
    The updated caches are returned separately (no stacking), so the device updates them in place."""

    def __init__(self, decoder: Decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, ids, pos, mask, *caches):
        d = self.decoder
        x = d._embed(ids, pos)
        cos, sin = rope_tables(d.cfg, pos) if d.cfg.kind == "llama" else (None, None)
        new = []
        for i, blk in enumerate(d.blocks):
            x, (k, v) = blk(x, cos, sin, cache=(caches[2 * i], caches[2 * i + 1]), pos=pos, mask=mask)
            new += [k, v]
        return (d.lm_head(d.final_norm(x)), *new)


def decode_inputs(cfg: DecoderConfig, batch: int, length: int, pos: int, seed: int = 2, device=None):
    """Example decode-step inputs: token ids, position, mask and caches filled (randomly) up to pos."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cfg.vocab, (batch, 1), generator=gen)
    shape = (batch, cfg.kv_heads, length, cfg.head_dim)
    caches = []
    for _ in range(2 * cfg.layers):
        c = torch.zeros(shape)
        c[:, :, :pos] = torch.randn(batch, cfg.kv_heads, pos, cfg.head_dim, generator=gen)
        caches.append(c)
    return (ids, torch.tensor([pos]), decode_mask(pos, length), *caches)


def decode_mask(pos: int, length: int) -> torch.Tensor:
    """Additive mask [1,1,1,length]: 0 up to pos, -inf after."""
    m = torch.full((1, 1, 1, length), float("-inf"))
    m[..., : pos + 1] = 0.0
    return m


def build(name: str, *, seed: int = 0, layers: int | None = None, meta: bool = False) -> Decoder:
    """A built-in model with random weights from a fixed seed (std 0.02 like GPT-2/Llama init).

    meta=True builds it on the meta device (shapes only) for timing-only estimates of real sizes."""
    cfg = config(name, layers)
    if meta:
        with torch.device("meta"):
            return Decoder(cfg).eval()
    model = Decoder(cfg)
    _init(model, seed)
    return model.eval()


def config(name: str, layers: int | None = None) -> DecoderConfig:
    if name not in CONFIGS:
        raise KeyError(f"unknown built-in model {name!r}; choose from {sorted(CONFIGS)}")
    return CONFIGS[name] if layers is None else replace(CONFIGS[name], layers=layers)


def _init(model: nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("bias"):
                p.zero_()
            elif "norm" in pname or ".ln_" in pname:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=gen)


class DecoderLayer(nn.Module):
    """One decoder block on hidden states: forward(x [B, S, hidden]) -> [B, S, hidden] (prefill)."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        self.block = (LlamaBlock if cfg.kind == "llama" else GPT2Block)(cfg)

    def forward(self, x):
        positions = torch.arange(x.shape[1], device=x.device)
        cos, sin = rope_tables(self.cfg, positions) if self.cfg.kind == "llama" else (None, None)
        return run_block(self.block, x, cos, sin)


def build_layer(name: str, *, seed: int = 0, meta: bool = False) -> DecoderLayer:
    cfg = config(name)
    if meta:
        with torch.device("meta"):
            return DecoderLayer(cfg).eval()
    layer = DecoderLayer(cfg)
    _init(layer, seed)
    return layer.eval()


class _nullctx:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def example_ids(cfg: DecoderConfig, batch: int, seq: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg.vocab, (batch, seq), generator=gen)
