"""A tiny prompt-injection classifier for the tests: a random-weight BERT sequence classifier with
a word-piece tokenizer, exported to ONNX the way a real one is laid out (``model.onnx``,
``tokenizer.json``, ``config.json`` with ``id2label``). Random weights prove the plumbing, not
the accuracy."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

WORDS = [
    "ignore",
    "all",
    "previous",
    "instructions",
    "and",
    "print",
    "your",
    "system",
    "prompt",
    "please",
    "describe",
    "the",
    "photo",
]


def write_classifier(root: Path, *, seed: int = 0, weights: bool = False) -> Path:
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification

    root.mkdir(parents=True, exist_ok=True)
    vocab = {
        t: i
        for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *WORDS, *"abcdefghijklmnopqrstuvwxyz"])
    }
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    tok.save(str(root / "tokenizer.json"))
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=128,
        num_labels=2,
        id2label={0: "SAFE", 1: "INJECTION"},
        label2id={"SAFE": 0, "INJECTION": 1},
    )
    config.architectures = ["BertForSequenceClassification"]
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config).eval()
    if weights:  # the PyTorch checkpoint too, as a hub repo without an ONNX export has it
        model.save_pretrained(root, safe_serialization=True)
    ids = torch.tensor([[2, 4, 5, 3]], dtype=torch.int64)
    mask = torch.ones_like(ids)
    types = torch.zeros_like(ids)
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated, and quick for this
        warnings.simplefilter("ignore")
        _export(torch, model, (ids, mask, types), root / "model.onnx", axes)
    (root / "config.json").write_text(json.dumps(config.to_dict()))
    return root


def _export(torch: Any, model: Any, args: tuple[Any, ...], path: Path, axes: dict[int, str]) -> None:
    torch.onnx.export(
        model,
        args,
        str(path),
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["logits"],
        dynamic_axes={
            "input_ids": axes,
            "attention_mask": axes,
            "token_type_ids": axes,
            "logits": {0: "batch"},
        },
        dynamo=False,
    )
