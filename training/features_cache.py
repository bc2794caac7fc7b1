"""Cached front-end features (Whisper encoder states, log-mel) of corpus utterances.

Training computes its inputs as the runtime does (``streamser.recognition.features.log_mel``, then
for "encoder" the int8 Whisper-base prefix graph of ``training.whisper_prefix``, which
export joins in front of the trained head, on the unpadded utterance), once per clip,
and keeps them in one ``.npz`` per corpus, feature kind and
augmentation copy under the cache folder (``STREAMSER_TRAIN_CACHE``, default
``artifacts/cache``). A hash of the settings is
part of the file name, so changed settings never reuse stale features.

Augmented copies (copy index >= 1) are made on the waveform before the front end:
speed/pitch change by resampling, gain, additive coloured noise at a random SNR, and a
telephone channel (8 kHz G.711 mu-law or A-law, decoded by the runtime's own
``AudioDecoder``, as a softphone's stream arrives), seeded by utterance id and copy index so every run
repeats. ``TELEPHONE`` is the telephone channel alone, for evaluation.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import soxr

from streamser.audio import SAMPLE_RATE_HZ
from streamser.audio.decode import AudioDecoder
from streamser.recognition import features
from streamser.recognition.whisper_model import default_whisper_dir
from training.daemon_path import daemon_audio, daemon_view
from training.datasets import Utterance, load_audio, load_dataset
from training.whisper_prefix import PrefixRunner, prefix_graph

_LOGGER = logging.getLogger(__name__)

CACHE_VERSION: Final = 1
VIEWS: Final = ("daemon", "clip")
"""What audio of a clip the features describe: "daemon" (the default), the longest
utterance the daemon's VAD and segmenter cut from it (``training.daemon_path``; the
whole clip when they find none), as ``streamser run`` would recognise it; "clip", the
whole clip with its leading and trailing silence (the view of models before v3)."""
FRONT_ENDS: Final = {
    "encoder": features.WHISPER_LAYERS,
    "encoder-top": features.WHISPER_ENCODER_TOP,
    "mel": features.LOG_MEL,
}
"""Feature kinds: the shipped front end (the states after Whisper base's encoder layers
2 and 3, computed by the prefix graph), the whole encoder's final states (the issue's
Whisper baseline), and log-mel."""
KINDS: Final = tuple(FRONT_ENDS)


def kind_of(front_end: features.FrontEnd | None) -> str:
    """The feature kind that computes ``front_end`` (None: the whole encoder, as in
    graphs older than ``FrontEnd``).

    Raises:
        ValueError: no kind here computes it.
    """
    wanted = front_end or features.WHISPER_ENCODER_TOP
    shipped = FRONT_ENDS["encoder"]
    if wanted.runs_whisper_layers and (wanted.whisper, wanted.n_mels) == (
        shipped.whisper,
        shipped.n_mels,
    ):
        return "encoder"  # any layers, any level: the prefix graph computes them
    for kind, known in FRONT_ENDS.items():
        if known == wanted:
            return kind
    raise ValueError(f"no cached feature kind computes the front end {wanted}")


def graph_input_kind(front_end: features.FrontEnd | None) -> str:
    """The feature kind an exported graph with ``front_end`` reads: "mel" where the
    graph runs Whisper layers itself (``kind_of`` gives its head's inputs), else
    ``kind_of(front_end)``."""
    if front_end is not None and front_end.type == "log-mel":
        return "mel"
    return kind_of(front_end)


@dataclass(frozen=True)
class AugmentOptions:
    """Waveform augmentation of the cached copies (copy 0 is always clean).

    Attributes:
        speeds: speed factors drawn from (resampling: tempo and pitch change).
        gain_db: gain drawn uniformly from [-gain_db, +gain_db].
        snr_db: (low, high) SNR range of the additive noise, in dB.
        noise_probability: chance that a copy gets noise at all.
        telephone_probability: chance that a copy then goes through the telephone
            channel (``telephone_channel``).
        codecs: the G.711 codecs that channel draws from.
        reverb_probability: chance that a copy is played in a simulated room
            (``room_response``) after the gain, before the noise.
        rt60_s: (low, high) range of that room's reverberation time, in seconds.
    """

    speeds: tuple[float, ...] = (0.9, 0.95, 1.0, 1.05, 1.1)
    gain_db: float = 6.0
    snr_db: tuple[float, float] = (8.0, 30.0)
    noise_probability: float = 0.8
    telephone_probability: float = 0.5
    codecs: tuple[str, ...] = ("mulaw", "alaw")
    reverb_probability: float = 0.0
    rt60_s: tuple[float, float] = (0.2, 0.8)


TELEPHONE: Final = AugmentOptions(
    speeds=(1.0,),
    gain_db=0.0,
    noise_probability=0.0,
    telephone_probability=1.0,
    codecs=("mulaw",),
)
"""The mu-law telephone channel and nothing else: the held-out copy that measures how a
model does on a call-center stream."""
TELEPHONE_RATE_HZ: Final = 8000


def g711_encode(audio: npt.NDArray[np.float32], codec: str) -> bytes:
    """G.711 bytes (``codec``: "mulaw" or "alaw") of float samples in [-1, 1], via
    16-bit PCM, by the reference coder (``audioop``: the standard library before
    Python 3.13, the audioop-lts port after)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # removed in 3.13
        import audioop

    pcm16 = np.clip(np.round(audio * 32767.0), -32768, 32767).astype("<i2").tobytes()
    return (
        audioop.lin2ulaw(pcm16, 2) if codec == "mulaw" else audioop.lin2alaw(pcm16, 2)
    )


def telephone_channel(
    audio: npt.NDArray[np.float32], codec: str = "mulaw"
) -> npt.NDArray[np.float32]:
    """``audio`` (16 kHz) as it reaches the runtime from a telephone: resampled to
    8 kHz, G.711 coded (``codec``: "mulaw" or "alaw"), and decoded and resampled back
    by ``streamser.audio.decode.AudioDecoder``."""
    narrow = soxr.resample(audio, SAMPLE_RATE_HZ, TELEPHONE_RATE_HZ)
    decoder = AudioDecoder(codec, TELEPHONE_RATE_HZ, 1)
    coded = g711_encode(np.asarray(narrow, dtype=np.float32), codec)
    return np.concatenate([decoder.decode(coded), decoder.flush()]).astype(np.float32)


def default_cache_dir() -> Path:
    """The cache folder (``STREAMSER_TRAIN_CACHE``, default ``artifacts/cache``)."""
    return Path(os.environ.get("STREAMSER_TRAIN_CACHE") or "artifacts/cache")


def _seed(utt_id: str, copy: int) -> int:
    return zlib.crc32(f"{utt_id}#{copy}".encode())


def _coloured_noise(
    rng: np.random.Generator, n_samples: int
) -> npt.NDArray[np.float32]:
    """White, pink or brown noise (1/f^beta spectrum), unit RMS."""
    beta = rng.choice([0.0, 1.0, 2.0])
    spectrum = rng.standard_normal(n_samples // 2 + 1) + 1j * rng.standard_normal(
        n_samples // 2 + 1
    )
    freqs = np.fft.rfftfreq(n_samples)
    freqs[0] = freqs[1] if n_samples > 1 else 1.0
    spectrum = spectrum / np.power(freqs, beta / 2.0)
    noise = np.fft.irfft(spectrum, n=n_samples)
    noise = noise / (np.sqrt(np.mean(noise**2)) + 1e-12)
    return noise.astype(np.float32)


def room_response(rng: np.random.Generator, rt60_s: float) -> npt.NDArray[np.float32]:
    """A synthetic room impulse response at 16 kHz: the direct sound, then 2.5 to 10
    ms later a diffuse tail of Gaussian noise decaying by 60 dB in ``rt60_s`` (the
    statistical model of late reverberation), at a direct-to-reverberant ratio drawn
    from -3 to +9 dB; unit energy."""
    delay = int(rng.uniform(0.0025, 0.010) * SAMPLE_RATE_HZ)
    n_tail = max(1, int(rt60_s * SAMPLE_RATE_HZ))
    t = np.arange(n_tail) / SAMPLE_RATE_HZ
    tail = rng.standard_normal(n_tail) * np.exp(-6.9078 * t / rt60_s)
    drr_db = rng.uniform(-3.0, 9.0)
    tail *= 10.0 ** (-drr_db / 20.0) / (np.sqrt(np.sum(tail**2)) + 1e-12)
    response = np.zeros(delay + n_tail)
    response[0] = 1.0
    response[delay:] += tail
    return (response / np.sqrt(np.sum(response**2))).astype(np.float32)


def augment_audio(
    audio: npt.NDArray[np.float32], utt_id: str, copy: int, options: AugmentOptions
) -> npt.NDArray[np.float32]:
    """One seeded augmented copy of ``audio`` (copy 0 is returned unchanged).

    Args:
        audio: 16 kHz mono float32 samples.
        utt_id: utterance id (part of the seed).
        copy: copy index; 0 means no augmentation.
        options: augmentation ranges.

    Returns:
        The augmented samples, float32, clipped to [-1, 1].
    """
    if copy == 0:
        return audio
    rng = np.random.default_rng(_seed(utt_id, copy))
    speed = float(rng.choice(options.speeds))
    out = audio
    if abs(speed - 1.0) > 1e-6:
        # Playing 16 kHz samples resampled from 16k*speed changes tempo and pitch.
        out = soxr.resample(out, SAMPLE_RATE_HZ * speed, SAMPLE_RATE_HZ)
    gain = 10.0 ** (rng.uniform(-options.gain_db, options.gain_db) / 20.0)
    out = out * gain
    if rng.random() < options.reverb_probability:
        from scipy.signal import fftconvolve

        response = room_response(rng, rng.uniform(*options.rt60_s))
        out = fftconvolve(out, response)[: out.shape[0]]
    if rng.random() < options.noise_probability:
        snr_db = rng.uniform(*options.snr_db)
        rms = float(np.sqrt(np.mean(out**2)) + 1e-9)
        noise = _coloured_noise(rng, out.shape[0])
        out = out + noise * rms / (10.0 ** (snr_db / 20.0))
    out = np.clip(out, -1.0, 1.0).astype(np.float32)
    if rng.random() < options.telephone_probability:
        out = telephone_channel(out, str(rng.choice(options.codecs)))
    return out


def front_end_of(
    kind: str, layers: Sequence[int] | None = None, mel_level: float | None = None
) -> features.FrontEnd:
    """The front end that computes ``kind``; for "encoder", reading Whisper's
    ``layers`` (None: the shipped ones, ``features.WHISPER_LAYERS``), with log-mel at
    ``mel_level`` (``features.level_mel``) when it is set."""
    if kind not in FRONT_ENDS:
        raise ValueError(f"unknown feature kind {kind!r}; known: {', '.join(KINDS)}")
    front_end = FRONT_ENDS[kind]
    if kind != "encoder":
        if layers is not None or mel_level is not None:
            raise ValueError(f"feature kind {kind!r} reads no Whisper layers")
        return front_end
    if layers is not None:
        front_end = replace(front_end, encoder_layers=tuple(layers))
    return replace(front_end, mel_level=mel_level)


def _settings_hash(
    kind: str,
    copy: int,
    options: AugmentOptions,
    view: str = "clip",
    front_end: features.FrontEnd | None = None,
) -> str:
    front_end = front_end or FRONT_ENDS[kind]
    settings: dict[str, Any] = {
        "version": CACHE_VERSION,
        "kind": kind,
        "front_end": front_end.to_dict(),
        "compute_type": "" if kind == "mel" else "int8",
        "graph": prefix_graph_path(front_end).name if kind == "encoder" else "",
        "copy": copy,
        "augment": asdict(options) if copy else None,
    }
    if view != "clip":  # "clip" keeps the hashes of caches made before views
        settings["view"] = view
    blob = json.dumps(settings, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


_RUNNERS: dict[tuple[int, ...], Any] = {}
"""Loaded runners by the Whisper layers they run (() for the whole encoder): front ends
that differ only in ``mel_level`` share one graph."""


def prefix_graph_path(front_end: features.FrontEnd | None = None) -> Path:
    """The int8 Whisper prefix graph of an "encoder" front end (default: the shipped
    one), built once and cached."""
    return prefix_graph(front_end or FRONT_ENDS["encoder"], default_cache_dir())


def _runner(front_end: features.FrontEnd) -> Any:
    """What computes the states of an encoder front end, loaded once: the prefix graph
    in onnxruntime (Whisper layers in the graph) or the runtime's int8 CTranslate2
    Whisper (the whole encoder)."""
    key = tuple(front_end.encoder_layers or ()) if front_end.runs_whisper_layers else ()
    if key and key not in _RUNNERS:
        _RUNNERS[key] = PrefixRunner(prefix_graph_path(front_end))
    elif key not in _RUNNERS:
        import ctranslate2

        _RUNNERS[key] = ctranslate2.models.Whisper(
            str(default_whisper_dir()), compute_type="int8", intra_threads=2
        )
    return _RUNNERS[key]


def compute_features(
    audio: npt.NDArray[np.float32],
    kind: str,
    front_end: features.FrontEnd | None = None,
) -> npt.NDArray[np.float32]:
    """Front-end features of one utterance, as the runtime computes them.

    Args:
        audio: 16 kHz mono float32 samples.
        kind: one of ``FRONT_ENDS``: "encoder" (the states after Whisper base's
            layers 2 and 3, (frames/2, 1024)), "encoder-top" ((frames/2, 512)) or
            "mel" ((frames, 80)).
        front_end: for "encoder", what to compute (``front_end_of``; default: the
            shipped front end); the states are (frames/2, 512 * its layers).

    Returns:
        The float32 feature frames, time-major.
    """
    if kind not in FRONT_ENDS:
        raise ValueError(f"unknown feature kind {kind!r}; known: {', '.join(KINDS)}")
    front_end = front_end or FRONT_ENDS[kind]
    mel = features.log_mel(audio)
    if kind == "mel":
        return mel
    if kind == "encoder":
        return _runner(front_end).states(front_end.levelled(mel))
    return features.encoder_states(_runner(front_end), [mel])[0]


def load_features(
    utterances: Sequence[Utterance],
    kind: str = "encoder",
    copy: int = 0,
    options: AugmentOptions | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
    view: str = "daemon",
    front_end: features.FrontEnd | None = None,
) -> list[npt.NDArray[np.float32]]:
    """Features of each utterance, computed once and cached per corpus.

    Args:
        utterances: utterances with audio paths.
        kind: "encoder" or "mel".
        copy: augmentation copy (0 = clean audio).
        options: augmentation settings (defaults when None).
        cache_dir: cache folder (``default_cache_dir()`` when None).
        progress: show a tqdm bar while computing.
        view: "daemon" (the segmenter's longest utterance) or "clip" (``VIEWS``).
        front_end: for "encoder", what to compute (``front_end_of``; default: the
            shipped front end).

    Returns:
        One float32 (frames, dim) array per utterance, in input order.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown feature kind {kind!r}; known: {', '.join(KINDS)}")
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}; known: {', '.join(VIEWS)}")
    options = options or AugmentOptions()
    folder = cache_dir or default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    by_corpus: dict[str, list[Utterance]] = {}
    for utt in utterances:
        by_corpus.setdefault(utt.corpus, []).append(utt)
    found: dict[str, npt.NDArray[np.float32]] = {}
    digest = _settings_hash(kind, copy, options, view, front_end)
    for corpus, utts in by_corpus.items():
        path = folder / f"{corpus}-{kind}-c{copy}-{digest}.npz"
        cached = read_cache(path)
        missing = [u for u in utts if u.utt_id not in cached]
        if missing:
            cached.update(
                _compute(
                    missing, kind, copy, options, progress, corpus, view, front_end
                )
            )
            write_cache(path, cached)
        found.update(cached)
    return [found[u.utt_id] for u in utterances]


def _compute(
    utts: list[Utterance],
    kind: str,
    copy: int,
    options: AugmentOptions,
    progress: bool,
    corpus: str,
    view: str = "clip",
    front_end: features.FrontEnd | None = None,
) -> dict[str, npt.NDArray[np.float32]]:
    from tqdm import tqdm

    out = {}
    desc = f"{kind} features {corpus} copy {copy}"
    for utt in tqdm(utts, desc=desc, disable=not progress, mininterval=5.0):
        if utt.path is None:
            raise ValueError(f"utterance {utt.utt_id} has no audio")
        if view == "daemon":
            audio = daemon_view(
                augment_audio(daemon_audio(utt.path), utt.utt_id, copy, options)
            )
        else:
            audio = augment_audio(load_audio(utt.path), utt.utt_id, copy, options)
        # Round through float16 now, as stored, so first and cached runs agree.
        feats = compute_features(audio, kind, front_end).astype(np.float16)
        out[utt.utt_id] = feats.astype(np.float32)
    return out


def read_cache(path: Path) -> dict[str, npt.NDArray[np.float32]]:
    """A cache file's frames by utterance id (empty when the file is absent)."""
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as data:
        ids = [str(x) for x in data["ids"]]
        offsets = data["offsets"]
        frames = data["frames"]
    return {
        utt_id: frames[offsets[i] : offsets[i + 1]].astype(np.float32)
        for i, utt_id in enumerate(ids)
    }


def write_cache(path: Path, items: dict[str, npt.NDArray[np.float32]]) -> None:
    """Write frames by utterance id to ``path`` as float16, atomically."""
    ids = sorted(items)
    lengths = [items[i].shape[0] for i in ids]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    frames = np.concatenate([items[i] for i in ids]).astype(np.float16)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, ids=np.array(ids), offsets=offsets, frames=frames)
    os.replace(tmp, path)
    _LOGGER.info("cached %d utterances in %s", len(ids), path)


def main(argv: list[str] | None = None) -> int:
    """``python -m training.features_cache --data KIND:PATH ... [--kinds] [--copies]``."""
    parser = argparse.ArgumentParser(prog="python -m training.features_cache")
    parser.add_argument("--data", action="append", required=True, help="KIND:PATH")
    parser.add_argument("--kinds", nargs="+", default=["encoder"], choices=KINDS)
    parser.add_argument("--copies", type=int, default=1, help="clean + N-1 augmented")
    parser.add_argument("--view", default="daemon", choices=VIEWS)
    args = parser.parse_args(argv)
    utts = [u for spec in args.data for u in load_dataset(spec)]
    for kind in args.kinds:
        for copy in range(args.copies):
            load_features(utts, kind, copy, view=args.view)
    return 0


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    sys.exit(main())
