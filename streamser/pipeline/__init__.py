"""The asyncio pipeline: audio streams in, events out.

``Engine`` (``engine.py``) is shared by every stream: the recogniser, the executors it
runs in, batching, event ids and the fan-out to sinks. ``StreamSession``
(``session.py``) is one audio stream. ``PipelineOptions`` (``options.py``) says how
streams are processed.
"""

from streamser.pipeline.engine import Engine, Recognized
from streamser.pipeline.options import BATCH_DEFAULTS, PipelineOptions
from streamser.pipeline.session import StreamSession

__all__ = ["BATCH_DEFAULTS", "Engine", "PipelineOptions", "Recognized", "StreamSession"]
