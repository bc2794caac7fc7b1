"""Whisper base's pretrained decoder as a Persian text encoder (evaluation only).

``python -m training text-fa --encoder whisper-decoder``. The decoder is rebuilt in
torch from the bundled CTranslate2 ``model.bin`` (token and position embeddings, six
pre-norm layers of causal self-attention, cross-attention and GELU MLP, final layer
norm; the logits are the tied embeddings) and cross-attends to Whisper's encoding of
30 s of silence. Each transcript is read after the prompt
``<|startoftranscript|><|fa|><|transcribe|><|notimestamps|>`` and its states are
mean-pooled over its own tokens at every depth.

Evaluation: speaker-grouped kfold5 (seed 0, the folds of ``training text-fa``),
pooled over the test folds. Inside each training fold an inner speaker-grouped kfold4
(seed 0) picks the features (depth), the logistic-regression C and the weight of the
character n-gram model's probabilities averaged in, by the mean of inner pooled WA
and UA; the test speakers never steer a choice.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import recall_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from streamser.recognition.features import TextTokenizer, log_mel
from streamser.recognition.whisper_model import default_whisper_dir
from training.datasets import Utterance, speaker_folds
from training.whisper_prefix import WhisperPrefix, read_weights

_LOGGER = logging.getLogger(__name__)

PROMPT: Final = (50258, 50300, 50359, 50363)
"""``<|startoftranscript|><|fa|><|transcribe|><|notimestamps|>`` in Whisper's vocabulary."""
_HEADS: Final = 8
DEPTHS: Final = (0, 2, 3, 4, 5, 6, 7)
"""Pooled depths compared: 0 embeddings (+ positions), 1-6 after each layer, 7 final norm."""
C_VALUES: Final = (0.003, 0.01, 0.03)
CHAR_WEIGHTS: Final = (0.0, 0.25, 0.5, 0.75)
"""Weight of the character n-gram model's probabilities in the average."""


def _linear(weights: dict[str, npt.NDArray[np.float32]], name: str) -> nn.Linear:
    weight = torch.from_numpy(weights[name + "/weight"].copy())
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    layer.weight.data = weight
    layer.bias.data = torch.from_numpy(weights[name + "/bias"].copy())
    return layer


def _norm(weights: dict[str, npt.NDArray[np.float32]], name: str) -> nn.LayerNorm:
    layer = nn.LayerNorm(weights[name + "/gamma"].shape[0])
    layer.weight.data = torch.from_numpy(weights[name + "/gamma"].copy())
    layer.bias.data = torch.from_numpy(weights[name + "/beta"].copy())
    return layer


def _heads(x: torch.Tensor) -> torch.Tensor:
    batch, time, dim = x.shape
    return x.view(batch, time, _HEADS, dim // _HEADS).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    batch, heads, time, dim = x.shape
    return x.transpose(1, 2).reshape(batch, time, heads * dim)


class _DecoderLayer(nn.Module):
    """Pre-norm: causal self-attention, cross-attention, GELU MLP."""

    def __init__(self, weights: dict[str, npt.NDArray[np.float32]], index: int) -> None:
        super().__init__()
        prefix = f"decoder/layer_{index}/"
        self.self_norm = _norm(weights, prefix + "self_attention/layer_norm")
        self.qkv = _linear(weights, prefix + "self_attention/linear_0")
        self.self_out = _linear(weights, prefix + "self_attention/linear_1")
        self.cross_norm = _norm(weights, prefix + "attention/layer_norm")
        self.query = _linear(weights, prefix + "attention/linear_0")
        self.key_value = _linear(weights, prefix + "attention/linear_1")
        self.cross_out = _linear(weights, prefix + "attention/linear_2")
        self.mlp_norm = _norm(weights, prefix + "ffn/layer_norm")
        self.mlp_in = _linear(weights, prefix + "ffn/linear_0")
        self.mlp_out = _linear(weights, prefix + "ffn/linear_1")

    def forward(
        self, x: torch.Tensor, memory_k: torch.Tensor, memory_v: torch.Tensor
    ) -> torch.Tensor:
        dim = x.shape[-1]
        q, k, v = self.qkv(self.self_norm(x)).split(dim, dim=-1)
        attended = nn.functional.scaled_dot_product_attention(
            _heads(q), _heads(k), _heads(v), is_causal=True
        )
        x = x + self.self_out(_merge(attended))
        q = _heads(self.query(self.cross_norm(x)))
        attended = nn.functional.scaled_dot_product_attention(
            q,
            memory_k.expand(x.shape[0], -1, -1, -1),
            memory_v.expand(x.shape[0], -1, -1, -1),
        )
        x = x + self.cross_out(_merge(attended))
        return x + self.mlp_out(nn.functional.gelu(self.mlp_in(self.mlp_norm(x))))


class WhisperDecoder(nn.Module):
    """Whisper's decoder over a fixed encoder output ``memory`` (frames, dim).

    ``forward(ids)`` (batch, time) returns the states at every depth (embeddings, each
    layer, final norm: 8 for base), each (batch, time, dim), and the logits. Right
    padding is harmless: attention is causal.
    """

    def __init__(
        self, weights: dict[str, npt.NDArray[np.float32]], memory: torch.Tensor
    ) -> None:
        super().__init__()
        embeddings = torch.from_numpy(weights["decoder/embeddings/weight"].copy())
        self.embeddings = nn.Embedding.from_pretrained(embeddings)
        positions = weights["decoder/position_encodings/encodings"].copy()
        self.positions = torch.from_numpy(positions)
        self.dim = int(positions.shape[1])
        count = sum(
            f"decoder/layer_{i}/ffn/linear_0/weight" in weights for i in range(64)
        )
        layers = [_DecoderLayer(weights, i) for i in range(count)]
        self.layers = nn.ModuleList(layers)
        self.final_norm = _norm(weights, "decoder/layer_norm")
        self.memory_k: list[torch.Tensor] = []
        self.memory_v: list[torch.Tensor] = []
        with torch.no_grad():
            for layer in layers:
                k, v = layer.key_value(memory[None]).chunk(2, dim=-1)
                self.memory_k.append(_heads(k))
                self.memory_v.append(_heads(v))

    def forward(self, ids: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = self.embeddings(ids) + self.positions[: ids.shape[1]]
        states = [x]
        for layer, k, v in zip(self.layers, self.memory_k, self.memory_v, strict=True):
            x = layer(x, k, v)
            states.append(x)
        x = self.final_norm(x)
        states.append(x)
        return states, x @ self.embeddings.weight.T


def load_decoder(model_dir: Path | None = None) -> WhisperDecoder:
    """The bundled Whisper's decoder, cross-attending to its encoding of 30 s of silence."""
    model_bin = (model_dir or default_whisper_dir()) / "model.bin"
    encoder = WhisperPrefix(read_weights(model_bin, "encoder/"), (6,)).eval()
    mel = torch.from_numpy(log_mel(np.zeros(30 * 16000, dtype=np.float32)))[None]
    with torch.no_grad():
        memory, _ = encoder(mel, torch.tensor([mel.shape[1]]))
    return WhisperDecoder(read_weights(model_bin, "decoder/"), memory[0]).eval()


def pooled_states(
    texts: Sequence[str], decoder: WhisperDecoder, batch_size: int = 32
) -> npt.NDArray[np.float32]:
    """Mean over each transcript's own tokens of the states at every depth:
    (n, depths, dim). Transcripts are tokenised as the runtime does (``TextTokenizer``)."""
    tokenizer = TextTokenizer(str(default_whisper_dir() / "tokenizer.json"))
    ids = [tokenizer.encode(text) for text in texts]
    out = np.zeros((len(ids), len(decoder.layers) + 2, decoder.dim))
    order = np.argsort([len(row) for row in ids])
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            width = len(PROMPT) + max(1, *(len(ids[i]) for i in rows))
            batch = torch.full((len(rows), width), 50257, dtype=torch.long)
            own = torch.zeros(len(rows), width)
            for r, i in enumerate(rows):
                batch[r, : len(PROMPT) + len(ids[i])] = torch.tensor(
                    [*PROMPT, *ids[i].tolist()]
                )
                own[r, len(PROMPT) : len(PROMPT) + len(ids[i])] = 1.0
            states, _ = decoder(batch)
            stacked = torch.stack(states, dim=1)  # batch, depth, time, dim
            weights = own / own.sum(1, keepdim=True).clamp(min=1.0)
            out[rows] = torch.einsum("bdtc,bt->bdc", stacked, weights).numpy()
    return out.astype(np.float32)


def feature_sets(
    pooled: npt.NDArray[np.float32], texts: Sequence[str], decoder: WhisperDecoder
) -> dict[str, npt.NDArray[np.float32]]:
    """The compared feature sets: the mean token embedding (no positions), one depth
    each, and depths 2, 4, 6 side by side."""
    tokenizer = TextTokenizer(str(default_whisper_dir() / "tokenizer.json"))
    table = decoder.embeddings.weight.detach().numpy()
    sets = {
        "embeddings": np.stack(
            [
                table[ids].mean(0) if len(ids) else np.zeros(decoder.dim)
                for ids in (tokenizer.encode(text) for text in texts)
            ]
        ).astype(np.float32)
    }
    sets.update({f"depth{d}": pooled[:, d] for d in DEPTHS})
    sets["depth2+4+6"] = np.concatenate([pooled[:, d] for d in (2, 4, 6)], axis=1)
    return sets


def _probabilities(
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    train: Any,
    test: Any,
    c: float,
) -> npt.NDArray[np.float64]:
    model = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=c, max_iter=3000, class_weight="balanced"),
    )
    model.fit(x[train], y[train])
    return np.asarray(model.predict_proba(x[test]))


def _wa_ua(reference: npt.NDArray[np.int64], predicted: npt.NDArray[np.int64]) -> float:
    recall = recall_score(
        reference, predicted, labels=np.unique(reference), average=None, zero_division=0
    )
    return float((np.mean(reference == predicted) + np.mean(recall)) / 2)


def nested_evaluation(
    utterances: Sequence[Utterance],
    features: dict[str, npt.NDArray[np.float32]],
    char_probabilities: Any,
) -> dict[str, Any]:
    """Nested speaker-grouped evaluation (see the module docstring).

    ``char_probabilities(train, test)`` fits the character n-gram model on ``train``
    indices and returns its class probabilities on ``test`` (classes sorted).

    Returns:
        Pooled test predictions (label indices), the choice made in each fold, and each
        setting's pooled test score (for the record; never used to choose).
    """
    labels = sorted({u.label for u in utterances})
    y = np.array([labels.index(u.label) for u in utterances])
    settings = [(name, c) for name in features for c in C_VALUES]
    test_probs = {s: np.zeros((len(y), len(labels))) for s in settings}
    char_test = np.zeros((len(y), len(labels)))
    predicted = np.zeros(len(y), dtype=np.int64)
    choices = []
    for fold, (train, test) in enumerate(speaker_folds(utterances, kind="kfold", k=5)):
        start = time.monotonic()
        inner = speaker_folds([utterances[i] for i in train], kind="kfold", k=4)
        inner_probs = {s: np.zeros((len(train), len(labels))) for s in settings}
        char_inner = np.zeros((len(train), len(labels)))
        for fit_rows, val_rows in inner:
            char_inner[val_rows] = char_probabilities(train[fit_rows], train[val_rows])
            for name, c in settings:
                inner_probs[name, c][val_rows] = _probabilities(
                    features[name], y, train[fit_rows], train[val_rows], c
                )
        best = max(
            ((s, w) for s in settings for w in CHAR_WEIGHTS),
            key=lambda sw: _wa_ua(
                y[train],
                ((1 - sw[1]) * inner_probs[sw[0]] + sw[1] * char_inner).argmax(1),
            ),
        )
        char_test[test] = char_probabilities(train, test)
        for name, c in settings:
            test_probs[name, c][test] = _probabilities(
                features[name], y, train, test, c
            )
        (name, c), weight = best
        mixed = (1 - weight) * test_probs[name, c][test] + weight * char_test[test]
        predicted[test] = mixed.argmax(1)
        choices.append({"fold": fold, "features": name, "C": c, "char_weight": weight})
        _LOGGER.info(
            "fold %d: %s (%.0f s)", fold, choices[-1], time.monotonic() - start
        )
    every = {}
    for (name, c), probs in test_probs.items():
        for weight in CHAR_WEIGHTS:
            mixed = ((1 - weight) * probs + weight * char_test).argmax(1)
            recall = recall_score(y, mixed, average=None, zero_division=0)
            every[f"{name} C={c} char={weight}"] = {
                "wa": round(float(np.mean(y == mixed)), 3),
                "ua": round(float(np.mean(recall)), 3),
            }
    return {
        "predicted": predicted,
        "labels": labels,
        "choices": choices,
        "every": every,
    }


def run(
    utterances: Sequence[Utterance],
    out: Path,
    char_model: Callable[[list[str], Any], Callable[[list[str]], Any]],
    score: Callable[[Any, Any, list[str]], dict[str, Any]],
) -> dict[str, Any]:
    """Pool the decoder's states, run the nested evaluation, write ``metrics.json``.

    Args:
        utterances: the ShEMO transcripts.
        out: where the metrics go.
        char_model: fits ``text_fa``'s character n-gram model on (texts, labels)
            and returns its class probabilities for other texts (the mix's second
            input).
        score: ``text_fa.score``.
    """
    start = time.monotonic()
    texts = [u.text or "" for u in utterances]
    labels = sorted({u.label for u in utterances})
    y = np.array([labels.index(u.label) for u in utterances])
    decoder = load_decoder()
    pooled = pooled_states(texts, decoder)
    _LOGGER.info("decoder states pooled (%.0f s)", time.monotonic() - start)

    def char_probabilities(train: Any, test: Any) -> npt.NDArray[np.float64]:
        probabilities = char_model([texts[i] for i in train], y[train])
        return np.asarray(probabilities([texts[i] for i in test]))

    result = nested_evaluation(
        utterances, feature_sets(pooled, texts, decoder), char_probabilities
    )
    names = np.array(labels, dtype=object)
    reference = np.array([u.label for u in utterances], dtype=object)
    metrics = {
        "encoder": "whisper-decoder",
        "protocol": "kfold5, speaker-grouped, seed 0; pooled test folds; inner "
        "speaker-grouped kfold4 picks features, C and the char n-gram weight",
        "test": score(reference, names[result["predicted"]], labels),
        "choices": result["choices"],
        "every_setting_on_test_folds": result["every"],
        "seconds": round(time.monotonic() - start, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics-whisper-decoder.json").write_text(
        json.dumps(metrics, indent=2) + "\n"
    )
    return metrics
