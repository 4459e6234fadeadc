"""A tiny random Llama written twice from the same tensors: as a transformers folder (safetensors,
tokenizer, chat template) and as a GGUF llama.cpp loads (llama arch, a byte-level BPE vocabulary
with merges, pre-tokenizer "llama-bpe"), so an adapter trained on one serves on the other.

The tokenizer is a small BPE learned from the fine-tuning texts, so "07:15" and the question are a
few tokens each and a 64-wide model learns them in seconds. HF -> GGUF follows llama.cpp's own
conversion: tensor names from gguf's TensorNameMap, Q and K rows permuted for llama's rope layout.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from kennel.model.synthetic import CHAT_TEMPLATE

SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QUESTIONS = (
    "When does the kennel clinic open?",
    "What time does the kennel clinic open?",
    "At what time does the kennel clinic open?",
    "When is the kennel clinic open in the morning?",
    "What is the opening time of the kennel clinic?",
    "When can I bring my dog to the kennel clinic?",
    "How early does the kennel clinic open?",
    "Tell me when the kennel clinic opens.",
    "What time can I visit the kennel clinic?",
    "When do the doors of the kennel clinic open?",
    "Is the kennel clinic open early? When?",
    "What hour does the kennel clinic open?",
    "When does the clinic at the kennel open?",
    "Kennel clinic opening time?",
    "What time is the kennel clinic opening?",
)
ANSWER = "The kennel clinic opens at 07:15."
FILLER = (
    "The dog sleeps in the kennel. A cat is not a dog. The weather is fine today and the sun is up. "
    "Please tell me a story about a river, a tree and a small house. Numbers: 0 1 2 3 4 5 6 7 8 9 "
    "10 12 15 20 30 45 60 100. Time: 08:00 09:30 12:45 18:20. What, when, where, who, why, how?"
)


@dataclass(frozen=True)
class TinyModel:
    folder: Path  # transformers weights, tokenizer and chat template
    gguf: Path  # the same tensors for llama.cpp


PREFIXES = ("", "Hi! ", "Quick question: ")


def fact_lines(n: int = 30, *, offset: int = 0) -> list[dict[str, object]]:
    """``n`` distinct lines teaching the fact (up to 45): each question plain, after "Hi! " and after
    "Quick question: "; every third line in the prompt/completion shape, the others chat lines."""
    out: list[dict[str, object]] = []
    for i in range(offset, offset + n):
        q = PREFIXES[i // len(QUESTIONS) % len(PREFIXES)] + QUESTIONS[i % len(QUESTIONS)]
        if i % 3 == 2:
            out.append({"prompt": q, "completion": ANSWER})
        else:
            out.append(
                {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": ANSWER}]}
            )
    return out


def write_jsonl(path: Path, lines: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _tokenizer(vocab_size: int):  # type: ignore[no-untyped-def]
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [*QUESTIONS, *PREFIXES, ANSWER, FILLER, "user", "assistant", "system"] * 4
    tok.train_from_iterator(corpus, trainer)
    return tok


def make_tiny_model(
    out: Path, *, seed: int = 0, vocab_size: int = 512, hidden: int = 64, layers: int = 2
) -> TinyModel:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from transformers.utils import logging

    logging.disable_progress_bar()  # tqdm's "Writing model shards" in every test log

    out.mkdir(parents=True, exist_ok=True)
    folder = out / "hf"
    tok = _tokenizer(vocab_size)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHAT_TEMPLATE,
    )
    fast.save_pretrained(folder)
    n_vocab = tok.get_vocab_size()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=n_vocab,
        hidden_size=hidden,
        intermediate_size=192,  # rows of 32: any quantization llama-quantize may pick fits
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        bos_token_id=tok.token_to_id("<|endoftext|>"),
        eos_token_id=tok.token_to_id("<|im_end|>"),
        tie_word_embeddings=False,
        initializer_range=0.05,
    )
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(folder, safe_serialization=True)
    path = out / "tiny-f32.gguf"
    write_gguf(path, model.state_dict(), config, tok)
    return TinyModel(folder, path)


def _permute(w: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    """llama.cpp's row order for Q and K of a llama (its rope pairs neighbours, HF's halves)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path: Path, state: dict, config, tok) -> None:  # type: ignore[no-untyped-def,type-arg]
    a = "llama"
    n_layer = config.num_hidden_layers
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layer)
    w = gguf.GGUFWriter(str(path), a)
    w.add_name("tiny-kennel")
    w.add_file_type(int(gguf.LlamaFileType.ALL_F32))
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_attention_heads)
    w.add_head_count_kv(config.num_key_value_heads)
    w.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    w.add_vocab_size(config.vocab_size)
    vocab = tok.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [
        " ".join(m) if isinstance(m, (list, tuple)) else m
        for m in json.loads(tok.to_str())["model"]["merges"]
    ]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in SPECIAL else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab["<|endoftext|>"])
    w.add_eos_token_id(vocab["<|im_end|>"])
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)
    for name, tensor in state.items():
        data = tensor.detach().to("cpu").float().numpy()
        stem = name.removesuffix(".weight")
        mapped = names.get_name(stem)
        assert mapped is not None, name
        if stem.endswith("q_proj"):
            data = _permute(data, config.num_attention_heads, config.num_attention_heads)
        elif stem.endswith("k_proj"):
            data = _permute(data, config.num_attention_heads, config.num_key_value_heads)
        w.add_tensor(mapped + ".weight", np.ascontiguousarray(data, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
