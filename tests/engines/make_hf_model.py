"""Writes a tiny random Llama as a transformers folder (safetensors, a byte-level tokenizer with a
chat template) for the vLLM tests. Byte-level, so any text (JSON for a schema) can be written.
Run with the Python that has vLLM (it has torch and transformers): ``python make_hf_model.py OUT``
(head size 32: vLLM's CPU attention needs at least 32), or with a JSON of config fields for
another shape (benchmarks/serve_load.py --engine vllm: ``python make_hf_model.py OUT '{...}'``)."""

import json
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

VOCAB = 1024
SPECIAL = ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"]
TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def main(out: Path, shape: dict[str, object]) -> None:
    alphabet = pre_tokenizers.ByteLevel.alphabet()  # the 256 byte symbols
    n_vocab = int(shape.get("vocab_size", VOCAB))  # type: ignore[call-overload]
    filler = [f"w{i}" for i in range(n_vocab - len(SPECIAL) - len(alphabet))]  # whole words, no merges
    vocab = {tok: i for i, tok in enumerate(SPECIAL + sorted(alphabet) + filler)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", chat_template=TEMPLATE
    )
    fast.save_pretrained(out)
    fields = {
        "vocab_size": VOCAB,
        "hidden_size": 128,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        **shape,
    }
    # the same weights every run: unseeded, one draw in a few greedily wrote only special tokens
    # and bytes of unfinished UTF-8 characters, which decode to no text at all
    torch.manual_seed(20261130)
    model = LlamaForCausalLM(LlamaConfig(**fields))
    if fields["torch_dtype"] == "bfloat16":
        model = model.to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})
