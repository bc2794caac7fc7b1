"""The Persian character n-gram text graph from ``training text-fa``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Final

import torch

from export.text_export import encode_rows, export_text_graph, write_text_card
from streamser.recognition.contract import ModelContract
from streamser.recognition.text_front import CharNgramEncoder
from training.text_en_models import CharNgramLinearModel

SHEMO_LICENCE: Final = (
    "Non-commercial research use only (trained on ShEMO transcripts: academic "
    "research corpus, use under its authors' terms (Mohamad Nezami et al. 2019))"
)


def write_vocabulary(checkpoint: dict[str, Any], path: Path) -> Path:
    """The n-gram vocabulary file the runtime's ``CharNgramEncoder`` reads."""
    vocabulary = {
        "ngram_range": checkpoint["ngram_range"],
        "lowercase": True,
        "vocabulary": checkpoint["vocabulary"],
    }
    path.write_text(json.dumps(vocabulary, ensure_ascii=False), encoding="utf-8")
    return path


def export_fa(args: argparse.Namespace) -> dict[str, Any]:
    """The Persian character n-gram graph from ``training text-fa``."""
    ckpt = torch.load(args.checkpoint, weights_only=False)
    module = CharNgramLinearModel(ckpt["idf"], ckpt["coef"], ckpt["intercept"])
    name = args.name or "emotion-text-fa-v2"
    vocab_name = f"{name}.ngrams.json"
    args.out.mkdir(parents=True, exist_ok=True)
    vocab_path = write_vocabulary(ckpt, args.out / vocab_name)
    contract = ModelContract(
        name=name,
        kind="text",
        version=name.rsplit("-v", 1)[1],
        labels=tuple(ckpt["labels"]),
        embedding_dim=len(ckpt["labels"]),
        languages=("fa",),
        tokenizer=f"char-ngrams:{vocab_name}",
    )
    target = args.out / f"{name}.onnx"
    rows = encode_rows(CharNgramEncoder(vocab_path), list(ckpt["texts"])[:10] + [""])
    verification = export_text_graph(module, contract, target, rows)
    verification["inputs"] = (
        "10 ShEMO transcripts and one empty one, singly and batched"
    )
    card = write_text_card(
        target,
        ckpt,
        args,
        config={
            "settings": ckpt["settings"],
            "vocabulary_size": len(ckpt["vocabulary"]),
        },
        metrics=ckpt["metrics"],
        licence=SHEMO_LICENCE,
        verification=verification,
        notes=f"Character n-gram vocabulary {vocab_name} ships beside the graph.",
        files=[vocab_path],
    )
    return {"name": name, "size_bytes": card["size_bytes"]}
