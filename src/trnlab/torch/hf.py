"""Hugging Face transformers models built from a config in code (random weights, nothing fetched)."""
from __future__ import annotations

import torch


def _seed(seed: int):
    torch.manual_seed(seed)


def llama(size: str = "tiny", seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM
    _seed(seed)
    cfg = LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      attn_implementation="sdpa", use_cache=False) if size == "tiny" else LlamaConfig()
    return LlamaForCausalLM(cfg).eval()


def gpt2(size: str = "tiny", seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel
    _seed(seed)
    cfg = GPT2Config(vocab_size=512, n_embd=128, n_layer=2, n_head=4, n_positions=512, bos_token_id=511,
                     eos_token_id=511, attn_implementation="sdpa", use_cache=False) if size == "tiny" else GPT2Config()
    return GPT2LMHeadModel(cfg).eval()


def bert(size: str = "tiny", seed: int = 0):
    from transformers import BertConfig, BertModel
    _seed(seed)
    cfg = BertConfig(vocab_size=512, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=256, max_position_embeddings=512,
                     attn_implementation="sdpa") if size == "tiny" else BertConfig()
    return BertModel(cfg, add_pooling_layer=True).eval()


def bert_mlm(size: str = "tiny", seed: int = 0):
    """BERT with its masked-LM head (the model trained with labels=)."""
    from transformers import BertConfig, BertForMaskedLM
    _seed(seed)
    cfg = BertConfig(vocab_size=512, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=256, max_position_embeddings=512,
                     attn_implementation="sdpa") if size == "tiny" else BertConfig()
    return BertForMaskedLM(cfg).eval()


BUILDERS = {"hf-llama": llama, "hf-gpt2": gpt2, "hf-bert": bert}
TRAINING_BUILDERS = {"hf-llama": llama, "hf-gpt2": gpt2, "hf-bert": bert_mlm}    # models that take labels=


def build(name: str, size: str = "tiny"):
    return BUILDERS[name](size)


def vocab(model) -> int:
    return model.config.vocab_size


class LogitsOnly(torch.nn.Module):
    """Wraps an HF model so forward(input_ids) returns a plain tensor (logits / last hidden state)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        out = self.model(input_ids=input_ids, use_cache=False) if _takes_cache(self.model) else \
            self.model(input_ids=input_ids)
        return out.logits if hasattr(out, "logits") else out.last_hidden_state


def _takes_cache(model) -> bool:
    return type(model).__name__ != "BertModel"
