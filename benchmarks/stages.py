"""Time per pipeline stage, real-time factor and peak memory, beside two peers.

On the same utterances: every stage of streamser (resampling from 8 kHz mu-law and
48 kHz PCM, VAD + segmenter, log-mel, Whisper encoder and decoder, the acoustic graph
(and the CTranslate2 encoder pass before it, for a graph that reads the whole encoder's
states), text, fusion), the whole ``Recognizer.recognize`` call, and

- peer (a): plain faster-whisper ``WhisperModel.transcribe`` on the same model, int8,
  beam 1, language given, VAD off, no timestamps: the ASR alone;
- peer (b): a naive pipeline, one utterance at a time, nothing batched or shared:
  faster-whisper ``transcribe``, then each ONNX graph in its own session (and a second
  Whisper model of its own where the acoustic graph reads whole-encoder states).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .common import (
    Section,
    emodb_clips,
    markdown_table,
    model_dir,
    peak_rss_mb,
    ravdess_clips,
    stopwatch,
)
from .whisper import TimedWhisper, faster_whisper_transcribe

_LOGGER = logging.getLogger(__name__)
CHUNK_MS = 20
"""Wire chunk size used for the decode and VAD stages (a typical RTP packet)."""


def _wire(audio: npt.NDArray[np.float32], rate: int, encoding: str) -> list[bytes]:
    """The clip as a client would send it: resampled, encoded, in 20 ms chunks."""
    import audioop  # Python < 3.13: reference G.711 encoder

    import soxr

    samples = soxr.resample(audio, 16000, rate) if rate != 16000 else audio
    pcm16 = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    payload = audioop.lin2ulaw(pcm16, 2) if encoding == "mulaw" else pcm16
    step = rate * CHUNK_MS // 1000 * (1 if encoding == "mulaw" else 2)
    return [payload[i : i + step] for i in range(0, len(payload), step)]


def _decode(chunks: Sequence[bytes], rate: int, encoding: str) -> None:
    from streamser.audio.decode import AudioDecoder

    decoder = AudioDecoder(encoding, rate, 1)
    for chunk in chunks:
        decoder.decode(chunk)
    decoder.flush()


def _segment(audio: npt.NDArray[np.float32]) -> int:
    from streamser.audio.segmenter import Segmenter, SegmenterOptions, UtteranceEnded
    from streamser.audio.vad import VadOptions, make_vad

    segmenter = Segmenter(make_vad(VadOptions()), SegmenterOptions())
    step = 16 * CHUNK_MS
    ended = 0
    for i in range(0, audio.shape[0], step):
        ended += sum(
            isinstance(e, UtteranceEnded) for e in segmenter.push(audio[i : i + step])
        )
    ended += sum(isinstance(e, UtteranceEnded) for e in segmenter.flush())
    return ended


class NaivePipeline:
    """Peer (b): every model on its own, one utterance at a time."""

    def __init__(self, asr_model: Any, models: Path, whisper_dir: str) -> None:
        """Own sessions for every graph (and a second Whisper where the acoustic graph
        reads the whole encoder's states)."""
        import ctranslate2

        from streamser.recognition.emotion import EmotionModels

        self.asr_model = asr_model
        self.models = EmotionModels.load(models, device="cpu", num_threads=1)
        front_end = self.models.acoustic_model.contract.front_end
        self.encoder = None
        if front_end is not None and front_end.type == "whisper-encoder":
            self.encoder = ctranslate2.models.Whisper(
                whisper_dir, compute_type="int8", intra_threads=2
            )

    def __call__(
        self, audio: npt.NDArray[np.float32], language: str, tokenizer: Any
    ) -> str:
        """Transcribe, then acoustic, text and fusion, each in its own call."""
        from streamser.recognition.features import encoder_states, log_mel

        text = faster_whisper_transcribe(self.asr_model, audio, language)
        inputs = [log_mel(audio)]
        if self.encoder is not None:
            inputs = encoder_states(self.encoder, inputs)
        acoustic = self.models.acoustic(inputs)
        text_output = None
        if text and self.models.text_model_for(language) is not None:
            encoder = self.models.text_encoder_for(language) or tokenizer
            text_output = self.models.text([encoder.encode(text)], language)
        self.models.fuse(acoustic, text_output or [None])
        return text


def run(quick: bool = False) -> Section:
    """Measure stages and peers on the same utterances."""
    from streamser.recognition.emotion_options import EmotionOptions
    from streamser.recognition.features import log_mel
    from streamser.recognition.recognizer import (
        Recognizer,
        RecognizerOptions,
        UtteranceRequest,
    )

    clips = ravdess_clips(2 if quick else 40, seed=1) + emodb_clips(
        1 if quick else 16, seed=1
    )
    audios = [c.audio() for c in clips]
    models, models_note = model_dir()
    recognizer = Recognizer(RecognizerOptions(EmotionOptions(model_dir=str(models))))
    asr = recognizer.asr
    assert asr is not None  # ASR is on in these options
    tokenizer = recognizer.tokenizer
    assert tokenizer is not None
    timed = TimedWhisper(asr.model.model)
    asr.model.model = timed
    window_s = asr.options.audio_context_s
    recognizer.warm_up()
    text_models = list(dict.fromkeys(recognizer.models.text_models.values()))
    wire = [(_wire(a, 8000, "mulaw"), _wire(a, 48000, "pcm_s16le")) for a in audios]
    naive = NaivePipeline(asr, models, asr.model_path)
    naive(audios[0], clips[0].language, tokenizer)
    stage_s: dict[str, list[float]] = {}
    full_s: list[float] = []
    peer_a_s: list[float] = []
    peer_b_s: list[float] = []
    for clip, audio, (mulaw, pcm48) in zip(clips, audios, wire, strict=True):
        t: dict[str, float] = {}
        with stopwatch(t, "resample 8 kHz mu-law -> 16 kHz"):
            _decode(mulaw, 8000, "mulaw")
        with stopwatch(t, "resample 48 kHz PCM -> 16 kHz"):
            _decode(pcm48, 48000, "pcm_s16le")
        with stopwatch(t, "VAD + segmenter"):
            _segment(audio)
        with stopwatch(t, "log-mel"):
            mel = log_mel(audio)
        timed.reset()
        transcript = recognizer._transcribe([mel], [clip.language])[0]
        assert transcript is not None  # ASR is on here
        asr_times = timed.reset()
        t[f"ASR encoder ({window_s:g} s window)"] = asr_times.get("encoder", 0.0)
        t["ASR decoder"] = asr_times.get("decoder", 0.0)
        with stopwatch(t, "acoustic: CTranslate2 encoder (whole-encoder graphs)"):
            features = recognizer._acoustic_inputs([mel])
        with stopwatch(t, "acoustic: graph (its own Whisper layers and the head)"):
            acoustic = recognizer.models.acoustic(features)
        text_outputs: list[Any] = [None]
        if text_models:
            # The runtime's text path: the model of the clip's language, if any.
            with stopwatch(t, "text: tokenize + graph"):
                text_outputs = recognizer.text_outputs(
                    [transcript.text or "x"], [clip.language]
                )
        with stopwatch(t, "fusion"):
            recognizer.models.fuse(acoustic, text_outputs)
        for key, value in t.items():
            stage_s.setdefault(key, []).append(value)
        started = time.perf_counter()
        recognizer.recognize(audio, clip.language)
        full_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        faster_whisper_transcribe(asr, audio, clip.language)
        peer_a_s.append(time.perf_counter() - started)
        # Interleaved per utterance, so that load and allocator state are alike.
        started = time.perf_counter()
        naive(audio, clip.language, tokenizer)
        peer_b_s.append(time.perf_counter() - started)
    rss_streamser = peak_rss_mb()
    batch = 8
    batched_s: list[float] = []
    for i in range(0, len(audios) - batch + 1 if len(audios) >= batch else 1, batch):
        group = [
            UtteranceRequest(a, c.language)
            for a, c in zip(audios[i : i + batch], clips[i : i + batch], strict=True)
        ]
        started = time.perf_counter()
        recognizer.recognize_batch(group)
        batched_s.append((time.perf_counter() - started) / len(group))
    asr.model.model = timed._model
    audio_s = float(np.mean([a.shape[0] / 16000 for a in audios]))
    stage_ms = {k: 1000 * float(np.mean(v)) for k, v in stage_s.items()}
    stage_sum = sum(v for k, v in stage_ms.items() if not k.startswith("resample 48"))
    rows = [[k, v, v / (1000 * audio_s)] for k, v in stage_ms.items()]
    rows.append(
        ["sum (8 kHz resample, not 48 kHz)", stage_sum, stage_sum / (1000 * audio_s)]
    )
    full_ms = 1000 * float(np.mean(full_s))
    peer_a_ms = 1000 * float(np.mean(peer_a_s))
    peer_b_ms = 1000 * float(np.mean(peer_b_s))
    batched_ms = 1000 * float(np.mean(batched_s))
    peers = [
        [
            "streamser Recognizer.recognize (batch 1)",
            full_ms,
            full_ms / peer_a_ms,
            full_ms / (1000 * audio_s),
        ],
        [
            f"streamser recognize_batch, {batch} per call (per utterance)",
            batched_ms,
            batched_ms / peer_a_ms,
            batched_ms / (1000 * audio_s),
        ],
        [
            "(a) faster-whisper transcribe, ASR alone",
            peer_a_ms,
            1.0,
            peer_a_ms / (1000 * audio_s),
        ],
        [
            "(b) naive pipeline, per utterance",
            peer_b_ms,
            peer_b_ms / peer_a_ms,
            peer_b_ms / (1000 * audio_s),
        ],
    ]
    body = "\n".join(
        [
            f"{len(clips)} utterances ({sum(c.corpus == 'ravdess' for c in clips)} "
            f"RAVDESS, {sum(c.corpus == 'emodb' for c in clips)} EMO-DB, seed 1), "
            f"mean {audio_s:.2f} s; emotion graphs: {models_note}. Mean ms per "
            f"utterance; RTF = time / audio duration. Decode and VAD stages get the "
            f"clip in {CHUNK_MS} ms chunks as a stream would. The text row calls the "
            "text graph on every transcript; the runtime runs it only when the "
            "transcript's language is one the graph reads.",
            "",
            markdown_table(["stage", "ms / utterance", "RTF"], rows),
            "",
            markdown_table(
                ["whole utterance", "ms / utterance", "x peer (a)", "RTF"], peers
            ),
            "",
            f"Peak RSS of the benchmark process (streamser's models plus peer (b)'s "
            f"sessions, and its second Whisper where one is used): "
            f"{rss_streamser:.0f} MiB. Streamser, (a) "
            "and (b) run interleaved, utterance by utterance.",
        ]
    )
    data = {
        "stages_ms": stage_ms,
        "full_ms": full_ms,
        "batched_ms": batched_ms,
        "peer_a_ms": peer_a_ms,
        "peer_b_ms": peer_b_ms,
        "ratio_full_to_a": full_ms / peer_a_ms,
        "audio_s": audio_s,
        "peak_rss_mb": rss_streamser,
        "models": models_note,
    }
    return Section("Per-stage time and peers", "benchmarks/stages.py", body, data)
