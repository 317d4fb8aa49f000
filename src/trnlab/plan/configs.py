"""Decoder model shapes without weights: the built-in Llama 2 / Llama 3.x / GPT-3 configurations and any
Hugging Face `config.json` (a path, or a transformers config object). Nothing here allocates a parameter:
the planner simulates one rank's shard of one layer on meta tensors.

Sources (public):
  Llama 2   https://huggingface.co/meta-llama/Llama-2-7b-hf/blob/main/config.json (and -13b-hf, -70b-hf)
  Llama 3   https://huggingface.co/meta-llama/Meta-Llama-3-8B/blob/main/config.json (and -70B)
  Llama 3.1 https://huggingface.co/meta-llama/Llama-3.1-8B/blob/main/config.json (and -70B, -405B)
  Llama 3.3 https://huggingface.co/meta-llama/Llama-3.3-70B-Instruct/blob/main/config.json
  GPT-3     Brown et al., https://arxiv.org/abs/2005.14165 table 2.1 (175B: 96 layers, d_model 12288, 96 heads,
            d_head 128, FFN 4 x d_model, GPT-2's 50257-token BPE vocabulary, context 2048).
  GPT-3 23B/46B are AWS's NeMo sizes, not the paper's: hidden 8192, 64 heads, 28 / 56 layers, seq 2048
            (https://github.com/aws-neuron/neuronx-nemo-megatron/blob/main/nemo/examples/nlp/language_modeling/gpt_23b.sh
            and gpt_46b.sh).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace

from trnlab.errors import OptionError

KINDS = ("llama", "gpt")


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A decoder-only transformer's shape. `kind` "llama": RMSNorm, RoPE, SwiGLU MLP, no biases, GQA;
    "gpt": LayerNorm, learned positions, GELU MLP, biases (GPT-3 as Megatron/NeMo build it)."""
    name: str
    kind: str
    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    head_dim: int
    max_seq: int
    tie_embeddings: bool = False
    source: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise OptionError(f"model {self.name!r}: kind must be one of {'|'.join(KINDS)}, got {self.kind!r}")
        for field in ("vocab", "hidden", "layers", "heads", "kv_heads", "intermediate", "head_dim", "max_seq"):
            value = getattr(self, field)
            if not (isinstance(value, int) and value >= 1):
                raise OptionError(f"model {self.name!r}: {field} must be an integer >= 1, got {value!r}")
        if self.heads % self.kv_heads:
            raise OptionError(f"model {self.name!r}: kv_heads ({self.kv_heads}) must divide heads ({self.heads})")

    # --- parameter counts -------------------------------------------------------------------------------
    def layer_params(self) -> int:
        h, d, i = self.hidden, self.head_dim, self.intermediate
        q, kv = self.heads * d, self.kv_heads * d
        attn = h * q + 2 * h * kv + q * h
        if self.kind == "llama":
            return attn + 3 * h * i + 2 * h
        return attn + (q + 2 * kv + h) + 2 * h * i + i + h + 4 * h    # biases, two LayerNorms

    def embedding_params(self) -> int:
        """Token embedding, learned positions (gpt), final norm and the LM head (once when tied)."""
        h = self.hidden
        emb = self.vocab * h + (self.max_seq * h if self.kind == "gpt" else 0)
        head = 0 if self.tie_embeddings else self.vocab * h
        return emb + head + (h if self.kind == "llama" else 2 * h)

    def params(self) -> int:
        return self.layers * self.layer_params() + self.embedding_params()

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__} | {"params": self.params()}


def _llama(name, hidden, layers, heads, kv, inter, vocab, max_seq, source, tie=False):
    return ModelSpec(name=name, kind="llama", vocab=vocab, hidden=hidden, layers=layers, heads=heads, kv_heads=kv,
                     intermediate=inter, head_dim=hidden // heads, max_seq=max_seq, tie_embeddings=tie,
                     source=source)


def _gpt3(name, hidden, layers, heads, source):
    return ModelSpec(name=name, kind="gpt", vocab=50257, hidden=hidden, layers=layers, heads=heads, kv_heads=heads,
                     intermediate=4 * hidden, head_dim=hidden // heads, max_seq=2048, source=source)


_HF = "https://huggingface.co/meta-llama/{}/blob/main/config.json"
_NEMO = ("https://github.com/aws-neuron/neuronx-nemo-megatron/blob/main/nemo/examples/nlp/language_modeling/"
         "gpt_{}.sh")
_GPT3 = "https://arxiv.org/abs/2005.14165 table 2.1"

MODELS: dict[str, ModelSpec] = {m.name: m for m in (
    _llama("llama-2-7b", 4096, 32, 32, 32, 11008, 32000, 4096, _HF.format("Llama-2-7b-hf")),
    _llama("llama-2-13b", 5120, 40, 40, 40, 13824, 32000, 4096, _HF.format("Llama-2-13b-hf")),
    _llama("llama-2-70b", 8192, 80, 64, 8, 28672, 32000, 4096, _HF.format("Llama-2-70b-hf")),
    _llama("llama-3-8b", 4096, 32, 32, 8, 14336, 128256, 8192, _HF.format("Meta-Llama-3-8B")),
    _llama("llama-3-70b", 8192, 80, 64, 8, 28672, 128256, 8192, _HF.format("Meta-Llama-3-70B")),
    _llama("llama-3.1-8b", 4096, 32, 32, 8, 14336, 128256, 131072, _HF.format("Llama-3.1-8B")),
    _llama("llama-3.1-70b", 8192, 80, 64, 8, 28672, 128256, 131072, _HF.format("Llama-3.1-70B")),
    _llama("llama-3.1-405b", 16384, 126, 128, 8, 53248, 128256, 131072, _HF.format("Llama-3.1-405B")),
    _llama("llama-3.3-70b", 8192, 80, 64, 8, 28672, 128256, 131072, _HF.format("Llama-3.3-70B-Instruct")),
    _llama("llama-tiny", 256, 4, 8, 2, 512, 512, 512, "trnlab's test shape (trnlab.torch.models llama-tiny, 4 layers)"),
    _gpt3("gpt3-23b", 8192, 28, 64, _NEMO.format("23b")),
    _gpt3("gpt3-46b", 8192, 56, 64, _NEMO.format("46b")),
    _gpt3("gpt3-175b", 12288, 96, 96, _GPT3),
)}
ALIASES = {"llama2-7b": "llama-2-7b", "llama2-13b": "llama-2-13b", "llama2-70b": "llama-2-70b",
           "llama-3-405b": "llama-3.1-405b", "gpt3-175": "gpt3-175b", "gpt-3-175b": "gpt3-175b"}


def model_names() -> list[str]:
    return list(MODELS)


def get_model(model) -> ModelSpec:
    """A ModelSpec from a built-in name, a path to a Hugging Face config.json (or its folder), a
    transformers config object, or a ModelSpec (returned as is)."""
    if isinstance(model, ModelSpec):
        return model
    if isinstance(model, str):
        key = ALIASES.get(model.strip().lower(), model.strip().lower())
        if key in MODELS:
            return MODELS[key]
        if os.path.exists(model):
            return from_hf_path(model)
        raise OptionError(f"unknown model {model!r}; valid values: {', '.join(MODELS)}, or a path to a Hugging "
                          "Face config.json")
    if hasattr(model, "to_dict") and hasattr(model, "hidden_size"):
        return from_hf_dict(model.to_dict(), name=getattr(model, "name_or_path", "") or type(model).__name__)
    raise OptionError(f"model must be a name, a config.json path, a transformers config or a ModelSpec, "
                      f"got {type(model).__name__}")


def from_hf_path(path: str) -> ModelSpec:
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as exc:
        raise OptionError(f"cannot read a Hugging Face config from {path!r}: {exc}") from exc
    return from_hf_dict(data, name=os.path.basename(os.path.dirname(os.path.abspath(path))) or path)


def from_hf_dict(data: dict, name: str = "hf-model") -> ModelSpec:
    """Llama-family keys (hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads,
    intermediate_size, vocab_size, head_dim); GPT-2-family keys (n_embd, n_layer, n_head, n_inner) too."""
    def get(*keys, default=None):
        for k in keys:
            if data.get(k) is not None:
                return data[k]
        if default is None:
            raise OptionError(f"Hugging Face config {name!r} lacks {' / '.join(keys)}")
        return default
    hidden = int(get("hidden_size", "n_embd", "d_model"))
    heads = int(get("num_attention_heads", "n_head"))
    gpt = data.get("model_type") in ("gpt2", "gpt_neox", "gptj", "gpt_bigcode", "opt") or "n_embd" in data
    return ModelSpec(name=name, kind="gpt" if gpt else "llama", vocab=int(get("vocab_size")), hidden=hidden,
                     layers=int(get("num_hidden_layers", "n_layer")), heads=heads,
                     kv_heads=int(get("num_key_value_heads", default=heads)),
                     intermediate=int(get("intermediate_size", "n_inner", "ffn_dim", default=4 * hidden)),
                     head_dim=int(get("head_dim", default=hidden // heads)),
                     max_seq=int(get("max_position_embeddings", "n_positions", default=4096)),
                     tie_embeddings=bool(data.get("tie_word_embeddings", gpt)), source="Hugging Face config.json")


def with_layers(spec: ModelSpec, layers: int) -> ModelSpec:
    return replace(spec, layers=layers)
