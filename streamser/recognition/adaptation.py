"""Speaker adaptation: a stream's earlier utterances as the acoustic model's baseline.

An acoustic graph that declares ``adaptation_window`` reads each utterance relative to
how the stream has sounded so far: it takes the mean of the ``pooled`` vectors it
returned for the stream's last ``adaptation_window`` utterances (``baseline``) and
their number (``baseline_count``), and leans on them more the more there are. A
stream's first utterance gets count 0, which is the unadapted model. One stream should
carry one speaker (a caller's side of a call, one microphone user); a stream that
mixes speakers can switch adaptation off (``[emotion] speaker_adaptation = false``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Baseline:
    """What the acoustic graph reads about a stream's earlier utterances.

    Attributes:
        mean: mean ``pooled`` vector of those utterances (None when there are none).
        count: how many utterances ``mean`` averages.
        version: utterances the stream has added so far (a result computed with an
            older version is stale).
    """

    mean: npt.NDArray[np.float32] | None
    count: int
    version: int


NO_BASELINE = Baseline(None, 0, 0)
"""The baseline of a stream with no earlier utterance (the unadapted model)."""


class SpeakerBaseline:
    """The ``pooled`` vectors of a stream's last ``window`` utterances."""

    def __init__(self, window: int) -> None:
        """``window`` 0 keeps nothing: every snapshot is ``NO_BASELINE``."""
        self.window = window
        self._recent: deque[npt.NDArray[np.float32]] = deque(maxlen=max(window, 1))
        self._version = 0

    def snapshot(self) -> Baseline:
        """The baseline for the stream's next utterance."""
        if not self.window or not self._recent:
            return Baseline(None, 0, self._version)
        mean = np.stack(self._recent).mean(axis=0, dtype=np.float64)
        return Baseline(
            np.asarray(mean, dtype=np.float32), len(self._recent), self._version
        )

    def add(self, pooled: npt.NDArray[np.float32] | None) -> None:
        """Record an utterance's pooled vector (None: the model does not adapt).

        A vector of another width than the ones kept (models reloaded) starts over.
        """
        if not self.window or pooled is None:
            return
        if self._recent and self._recent[0].shape != pooled.shape:
            self._recent.clear()
        self._recent.append(np.asarray(pooled, dtype=np.float32))
        self._version += 1
