"""A clip as the daemon hears it: decode, VAD and segmentation of ``streamser run``.

``streamser run FILE`` reads the file with ``streamser.audio.files.read_audio_file``,
feeds it in 100 ms chunks to one stream whose ``Segmenter`` runs the default VAD and
segmenter options, and recognises each utterance the segmenter closes (its audio
includes the pre-speech pad and the end pad, never the whole clip). Training and
evaluation call ``daemon_utterances`` so they see the same audio the daemon sees.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from streamser.audio.files import read_audio_file
from streamser.audio.segmenter import Segmenter, SegmenterOptions, UtteranceEnded
from streamser.audio.sources import CHUNK_SAMPLES
from streamser.audio.vad import VadOptions, make_vad


def daemon_utterances(
    audio: npt.NDArray[np.float32],
    vad: VadOptions | None = None,
    segmenter: SegmenterOptions | None = None,
) -> list[npt.NDArray[np.float32]]:
    """The utterances one stream carrying ``audio`` yields (possibly none).

    Args:
        audio: 16 kHz mono float32, the whole clip.
        vad: VAD options (default: the daemon's defaults).
        segmenter: segmenter options (default: the daemon's defaults).

    Returns:
        The audio of each closed utterance, in order.
    """
    machine = Segmenter(make_vad(vad or VadOptions()), segmenter or SegmenterOptions())
    out: list[npt.NDArray[np.float32]] = []
    events = []
    for offset in range(0, audio.shape[0], CHUNK_SAMPLES):
        events += machine.push(audio[offset : offset + CHUNK_SAMPLES])
    events += machine.flush()
    for event in events:
        if isinstance(event, UtteranceEnded):
            out.append(np.asarray(event.audio, dtype=np.float32))
    return out


def daemon_audio(path: str | Path) -> npt.NDArray[np.float32]:
    """The clip decoded as ``streamser run`` decodes a file."""
    return read_audio_file(path)


def main_utterance(
    utterances: list[npt.NDArray[np.float32]],
) -> npt.NDArray[np.float32] | None:
    """The longest utterance (what training learns from), or None."""
    if not utterances:
        return None
    return max(utterances, key=lambda u: u.shape[0])


def daemon_view(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The longest utterance the daemon cuts from ``audio``, or all of ``audio`` when
    it cuts none (the view training and evaluation score)."""
    main = main_utterance(daemon_utterances(audio))
    return audio if main is None else main
