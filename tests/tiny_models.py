"""Tiny randomly initialised causal LMs of every supported family, built offline."""

import torch
from transformers import AutoConfig, AutoModelForCausalLM

VOCAB = 128
FAMILIES = {
    "llama": dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2),
    "mistral": dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2),
    "qwen2": dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2),
    "gemma": dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=8),
    "gemma2": dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=8),
    "opt": dict(hidden_size=32, ffn_dim=64, num_attention_heads=4, word_embed_proj_dim=32),
    "gpt2": dict(n_embd=32, n_head=4),
    "gpt_neox": dict(hidden_size=32, intermediate_size=64, num_attention_heads=4),
    "phi": dict(hidden_size=32, intermediate_size=64, num_attention_heads=4),
}


def tiny_model(family: str = "llama", layers: int = 4, seed: int = 0):
    config = AutoConfig.for_model(family, vocab_size=VOCAB, num_hidden_layers=layers,
                                  max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
                                  pad_token_id=0, **FAMILIES[family])
    if family == "gpt2":
        config.n_layer = layers
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).float()


def token_batch(batch: int = 4, length: int = 12, prompt: int = 4, seed: int = 0) -> dict:
    """A batch of random token ids whose first ``prompt`` positions are masked out of the loss."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch, length), generator=generator)
    labels = ids.clone()
    labels[:, :prompt] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def token_dataset(rows: int = 16, length: int = 12, seed: int = 0):
    from datasets import Dataset

    batch = token_batch(rows, length, seed=seed)
    return Dataset.from_dict({k: v.tolist() for k, v in batch.items()})


def stack_collator(features):
    return {k: torch.tensor([f[k] for f in features]) for k in features[0]}


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_chat_model_dir(target):
    """The tiny random Llama with a ChatML chat template, saved as a model folder: what a chat model
    from the hub looks like to ``load_model`` and ``--model``."""
    from tvaccine.models import TINY_RANDOM_MODEL, load_model

    model, tokenizer = load_model(TINY_RANDOM_MODEL, device="cpu")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHATML
    model.resize_token_embeddings(len(tokenizer))
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target
