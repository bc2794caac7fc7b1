"""Emotion predictors over the ONNX graphs: acoustic, text and fusion.

``EmotionModels`` holds one session per graph, shared by every stream; all methods
take batches (lists) so that concurrent utterances can share one call.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from streamser.errors import ModelError
from streamser.recognition.adaptation import NO_BASELINE, Baseline
from streamser.recognition.features import pad_batch
from streamser.recognition.model_choice import ModelChoice, ModelFile, choose_models
from streamser.recognition.models import OnnxModel
from streamser.recognition.text_front import TokenEncoder, encoder_for
from streamser.recognition.text_multi import SentenceEncoder

_LOGGER = logging.getLogger(__name__)

UNCERTAIN = "uncertain"
"""The label of an utterance whose top probability is below ``min_confidence``."""
ANY_LANGUAGE = "*"
"""Key of ``EmotionModels.text_models`` for a text graph that reads any language (its
``languages`` field empty): the graph of every language without its own."""


@dataclass(frozen=True)
class EmotionScores:
    """A distribution over emotion labels.

    Attributes:
        label: the most probable label ("uncertain" when its probability is below
            the ``[emotion] min_confidence`` setting; see ``uncertain_below``).
        scores: label to probability, in the model's label order, summing to 1.
        arousal: activation in [-1, 1], from a graph with an ``affect`` output.
        valence: pleasantness in [-1, 1], likewise; None when no graph gives it.
    """

    label: str
    scores: Mapping[str, float]
    arousal: float | None = None
    valence: float | None = None

    @property
    def confidence(self) -> float:
        """Probability of ``label`` (of the most probable label when "uncertain")."""
        if self.label in self.scores:
            return float(self.scores[self.label])
        return float(max(self.scores.values()))

    def uncertain_below(self, threshold: float) -> EmotionScores:
        """These scores, labelled ``UNCERTAIN`` when the top probability is below
        ``threshold`` (scores unchanged)."""
        if threshold > 0 and self.confidence < threshold:
            return replace(self, label=UNCERTAIN)
        return self

    @classmethod
    def from_probs(
        cls, labels: Sequence[str], probs: npt.NDArray[np.float32]
    ) -> EmotionScores:
        """Build from one row of probabilities (renormalised against rounding)."""
        values = np.clip(np.asarray(probs, dtype=np.float64), 0.0, None)
        total = values.sum()
        values = values / total if total > 0 else np.full(len(labels), 1 / len(labels))
        scores = {label: float(v) for label, v in zip(labels, values, strict=True)}
        return cls(label=labels[int(np.argmax(values))], scores=scores)


@dataclass(frozen=True)
class EmotionOutput:
    """One model's output for one input.

    Attributes:
        scores: the label distribution.
        embedding: the penultimate representation, the input of fusion.
    """

    scores: EmotionScores
    embedding: npt.NDArray[np.float32]
    sentiment: EmotionScores | None = None
    """For a text graph with a ``sentiment`` output: the transcript's sentiment."""
    pooled: npt.NDArray[np.float32] | None = None
    """For an acoustic graph that adapts to the speaker: the vector the stream's
    baseline averages (``streamser.recognition.adaptation``)."""


class EmotionModels:
    """The acoustic graph, the text graphs (one per language) and the fusion graph."""

    def __init__(
        self,
        acoustic: OnnxModel,
        text: Mapping[str, OnnxModel],
        fusion: OnnxModel | None,
        num_threads: int = 1,
    ) -> None:
        """Combine loaded graphs; see ``load`` to read a folder.

        ``text`` maps a language (or ``ANY_LANGUAGE``) to its graph."""
        self.acoustic_model = acoustic
        self.text_models = dict(text)
        self.text_encoders: dict[str, TokenEncoder | SentenceEncoder] = {}
        """Text graph name -> its own front end (graphs over Whisper BPE have none):
        token ids, or the sentence vector of a graph with an ``encoder``."""
        sentence_encoders: dict[str, SentenceEncoder] = {}
        for model in dict.fromkeys(self.text_models.values()):
            name = model.contract.encoder
            if name:
                if name not in sentence_encoders:
                    sentence_encoders[name] = SentenceEncoder(name, num_threads)
                self.text_encoders[model.contract.name] = sentence_encoders[name]
                continue
            encoder = encoder_for(model.contract.tokenizer, model.path.parent)
            if encoder is not None:
                self.text_encoders[model.contract.name] = encoder
        self.fusion_model = fusion
        self._pooled_width = _baseline_width(acoustic)
        self._text_width = 0
        if fusion is not None:
            if fusion.contract.labels != acoustic.contract.labels:
                raise ModelError(
                    f"{fusion.path}: field labels differs from the acoustic model's"
                )
            _check_partners(fusion, acoustic, text)
            width = fusion.session.get_inputs()[1].shape[-1]
            if not isinstance(width, int):
                raise ModelError(f"{fusion.path}: text_embedding width is not fixed")
            self._text_width = width

    @classmethod
    def load(
        cls,
        model_dir: Path,
        *,
        device: str = "auto",
        num_threads: int = 1,
        acoustic: str = "",
        text: Mapping[str, str] | None = None,
    ) -> EmotionModels:
        """Load the graphs of ``model_dir`` that ``choose_models`` picks: those
        named, else the newest of each kind (and text language).

        Args:
            model_dir: the model folder.
            device: "auto", "cpu" or "cuda".
            num_threads: onnxruntime threads per call.
            acoustic: the acoustic graph's name ("" for the newest).
            text: language to text graph name (others: the newest that reads it).

        Raises:
            ModelError: no acoustic graph, a named graph is not there or does not
                read its language, or a graph fails its checks.
        """
        choice = choose_models(model_dir, acoustic, text)
        loaded: dict[Path, OnnxModel] = {}

        def load(file: ModelFile) -> OnnxModel:
            if file.path not in loaded:
                loaded[file.path] = OnnxModel(
                    file.path, num_threads=num_threads, device=device
                )
            model = loaded[file.path]
            if model.contract.kind != file.kind:
                raise ModelError(f"{model.path}: field kind is {model.contract.kind!r}")
            return model

        acoustic_model = load(choice.acoustic)
        by_language: dict[str, OnnxModel] = {}
        for file in choice.text:
            model = load(file)
            by_language.update(
                dict.fromkeys(model.contract.languages or (ANY_LANGUAGE,), model)
            )
        for language, file in choice.named_text.items():
            model = load(file)
            if model.contract.languages and language not in model.contract.languages:
                raise ModelError(
                    f"[emotion.text] {language} = {file.name!r}: the model reads "
                    f"{', '.join(model.contract.languages)}"
                )
            by_language[language] = model
        fusion = load(choice.fusion) if choice.fusion else None
        models = cls(acoustic_model, by_language, fusion, num_threads)
        models.log_choice(model_dir, choice)
        return models

    def log_choice(self, model_dir: Path, choice: ModelChoice) -> None:
        """Log each graph (name, version, hash prefix, labels), then the choice in
        one line: which graph serves what, and whether it was named or the newest."""
        for model in self.all_models:
            _LOGGER.info(
                "Emotion model %s v%s (%s) sha256 %s labels %s",
                model.contract.name,
                model.contract.version,
                model.contract.kind,
                model.sha256[:12],
                ",".join(model.contract.labels),
            )
        how = {True: "named", False: "newest"}
        parts = [
            f"acoustic={self.acoustic_model.contract.name} ({how[choice.acoustic_named]})"
        ]
        parts += [
            f"text.{language}={model.contract.name} ({how[language in choice.named_text]})"
            for language, model in sorted(self.text_models.items())
        ]
        if self.fusion_model is not None:
            parts.append(f"fusion={self.fusion_model.contract.name} (newest)")
        _LOGGER.info("Emotion models chosen in %s: %s", model_dir, " ".join(parts))

    @property
    def all_models(self) -> list[OnnxModel]:
        """Every loaded graph, acoustic first."""
        models = [self.acoustic_model]
        models += [m for m in dict.fromkeys(self.text_models.values())]
        if self.fusion_model is not None:
            models.append(self.fusion_model)
        return models

    def acoustic(
        self,
        features: Sequence[npt.NDArray[np.float32]],
        baselines: Sequence[Baseline] | None = None,
    ) -> list[EmotionOutput]:
        """Acoustic emotion of a batch of feature sequences (time, dim).

        ``baselines`` (one per sequence; default none) are the streams' earlier
        utterances, for a graph that adapts to the speaker (``streamser.recognition.adaptation``);
        other graphs ignore them. A graph that runs Whisper layers itself gets one
        utterance per call (``FrontEnd.runs_whisper_layers``): batched, an
        utterance's result would depend on its neighbours.
        """
        if not features:
            return []
        given = (
            list(baselines) if baselines is not None else [NO_BASELINE] * len(features)
        )
        front_end = self.acoustic_model.contract.front_end
        if front_end is not None:
            features = [front_end.levelled(f) for f in features]
        rows = list(range(len(features)))
        groups = (
            [[i] for i in rows]
            if front_end is not None and front_end.runs_whisper_layers
            else [rows]
        )
        labels = self.acoustic_model.contract.labels
        affect_names = self.acoustic_model.contract.affect
        adapts = self.acoustic_model.contract.adaptation_window > 0
        outputs = []
        for group in groups:
            batch, lengths = pad_batch([features[i] for i in group], np.float32)
            inputs = {"features": batch, "lengths": lengths}
            if adapts:
                inputs.update(self._baseline_inputs([given[i] for i in group]))
            out = self.acoustic_model.run(inputs)
            pooled = out.get("pooled")
            affect = out.get("affect") if affect_names else None
            outputs += [
                EmotionOutput(
                    _with_affect(
                        EmotionScores.from_probs(labels, p),
                        affect_names,
                        affect[row] if affect is not None else None,
                    ),
                    e.astype(np.float32),
                    pooled=(
                        pooled[row].astype(np.float32) if pooled is not None else None
                    ),
                )
                for row, (p, e) in enumerate(
                    zip(out["probs"], out["embedding"], strict=True)
                )
            ]
        return outputs

    def _baseline_inputs(
        self, baselines: Sequence[Baseline]
    ) -> dict[str, npt.NDArray[np.float32]]:
        """The ``baseline`` and ``baseline_count`` inputs; a baseline of another
        width than the graph's (models reloaded mid-stream) counts as none."""
        width = self._pooled_width
        mean = np.zeros((len(baselines), width), dtype=np.float32)
        count = np.zeros(len(baselines), dtype=np.float32)
        for row, baseline in enumerate(baselines):
            if baseline.mean is not None and baseline.mean.shape == (width,):
                mean[row] = baseline.mean
                count[row] = baseline.count
        return {"baseline": mean, "baseline_count": count}

    def text_model_for(self, language: str | None) -> OnnxModel | None:
        """The text graph that reads ``language``: its own, else the graph that reads
        any language (``ANY_LANGUAGE``), if any."""
        own = self.text_models.get(language or "")
        return own if own is not None else self.text_models.get(ANY_LANGUAGE)

    def text_encoder_for(
        self, language: str | None
    ) -> TokenEncoder | SentenceEncoder | None:
        """The front end of ``language``'s text graph; None when it reads Whisper BPE
        ids (or there is no graph)."""
        model = self.text_model_for(language)
        return (
            self.text_encoders.get(model.contract.name) if model is not None else None
        )

    def text(
        self, token_ids: Sequence[npt.NDArray[np.generic]], language: str
    ) -> list[EmotionOutput] | None:
        """Text emotion (and sentiment, where the graph gives it) of a batch of token
        id sequences (or sentence vectors, for a graph with an ``encoder``); None
        without a model."""
        model = self.text_model_for(language)
        if model is None or not token_ids:
            return None
        if model.contract.encoder:
            rows = np.stack([np.asarray(r, np.float32) for r in token_ids])
            out = model.run({"sentence": rows})
        else:
            # One transcript per call: an int8 graph quantises activations over the
            # whole batch, so a padded neighbour would change a transcript's scores.
            parts = [
                model.run(
                    {
                        "token_ids": ids[None, :],
                        "lengths": np.array([len(ids)], np.int64),
                    }
                )
                for ids in token_ids
            ]
            out = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
        labels = model.contract.labels
        sentiment_labels = model.contract.sentiment_labels
        sentiments = out.get("sentiment") if sentiment_labels else None
        return [
            EmotionOutput(
                EmotionScores.from_probs(labels, p),
                e,
                EmotionScores.from_probs(sentiment_labels, sentiments[row])
                if sentiments is not None
                else None,
            )
            for row, (p, e) in enumerate(
                zip(out["probs"], out["embedding"], strict=True)
            )
        ]

    def fuse(
        self,
        acoustic: Sequence[EmotionOutput],
        text: Sequence[EmotionOutput | None],
    ) -> list[EmotionScores]:
        """Fused emotion; the acoustic scores where there is no fusion graph."""
        if self.fusion_model is None or not acoustic:
            return [a.scores for a in acoustic]
        text_rows = [
            t.embedding if t is not None else np.zeros(self._text_width, np.float32)
            for t in text
        ]
        present = np.asarray([0.0 if t is None else 1.0 for t in text], np.float32)
        out = self.fusion_model.run(
            {
                "acoustic_embedding": np.stack([a.embedding for a in acoustic]),
                "text_embedding": np.stack(text_rows).astype(np.float32),
                "text_present": present,
            }
        )
        labels = self.fusion_model.contract.labels
        return [EmotionScores.from_probs(labels, p) for p in out["probs"]]


def _with_affect(
    scores: EmotionScores,
    names: Sequence[str],
    row: npt.NDArray[np.float32] | None,
) -> EmotionScores:
    """``scores`` with the arousal and valence of an ``affect`` row (clipped to
    [-1, 1]; a non-finite value stays None)."""
    if row is None:
        return scores
    values = {}
    for name, value in zip(names, row.tolist(), strict=True):
        if np.isfinite(value):
            values[name] = float(min(1.0, max(-1.0, value)))
    return replace(scores, arousal=values.get("arousal"), valence=values.get("valence"))


def _baseline_width(model: OnnxModel) -> int:
    """Width of an adapting acoustic graph's ``baseline`` input (0: it does not adapt)."""
    if not model.contract.adaptation_window:
        return 0
    for item in model.session.get_inputs():
        if item.name == "baseline" and isinstance(item.shape[-1], int):
            return int(item.shape[-1])
    raise ModelError(f"{model.path}: input baseline has no fixed width")


def _check_partners(
    fusion: OnnxModel, acoustic: OnnxModel, text: Mapping[str, OnnxModel]
) -> None:
    """A fusion graph is fit to one acoustic and one text graph; refuse other pairs.

    Its card names them (``fused_with``, by sha256); without a card there is nothing
    to check.
    """
    partners = fusion.card.get("fused_with") or {}
    expected = partners.get("acoustic_sha256")
    if expected and expected != acoustic.sha256:
        raise ModelError(
            f"{fusion.path}: fit to acoustic graph sha256 {expected[:12]}, but "
            f"{acoustic.path.name} is {acoustic.sha256[:12]}; retrain fusion"
        )
    expected = partners.get("text_sha256")
    shas = {model.sha256 for model in text.values()}
    if expected and shas and expected not in shas:
        raise ModelError(
            f"{fusion.path}: fit to text graph sha256 {expected[:12]}, which is not "
            "among the loaded text graphs; retrain fusion"
        )
