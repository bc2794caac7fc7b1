"""Prometheus metrics of one streamser process, on a registry of its own."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

_LATENCY_BUCKETS_S = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
_STAGE_BUCKETS_S = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class Metrics:
    """Every metric streamser exports; one instance per server or run.

    Each is named ``streamser_`` plus its name; they are made by concern: streams and
    audio, recognition, the server's connections, the event sinks.
    """

    def __init__(self) -> None:
        """Create the metrics on a fresh registry."""
        self.registry = CollectorRegistry()
        self._streams_and_audio()
        self._recognition()
        self._connections()
        self._sinks()
        ProcessCollector(registry=self.registry)  # process_resident_memory_bytes...

    def _counter(self, name: str, doc: str, *labels: str) -> Counter:
        return Counter(f"streamser_{name}", doc, labels, registry=self.registry)

    def _gauge(self, name: str, doc: str, *labels: str) -> Gauge:
        return Gauge(f"streamser_{name}", doc, labels, registry=self.registry)

    def _histogram(
        self, name: str, doc: str, buckets: Sequence[float], *labels: str
    ) -> Histogram:
        return Histogram(
            f"streamser_{name}", doc, labels, buckets=buckets, registry=self.registry
        )

    def _streams_and_audio(self) -> None:
        self.active_streams = self._gauge("active_streams", "Audio streams open now")
        self.streams = self._counter("streams", "Audio streams accepted")
        self.audio_seconds = self._counter("audio_seconds", "Seconds of audio received")
        self.utterances = self._counter("utterances", "Utterances recognised")
        self.errors = self._counter("errors", "Error events sent, by code", "code")
        self.draining = self._gauge("draining", "1 while shutting down")

    def _recognition(self) -> None:
        self.dropped_utterances = self._counter(
            "dropped_utterances", "Utterances shed because recognition lagged"
        )
        self.skipped_asr = self._counter(
            "skipped_asr",
            "Utterances recognised without ASR to keep up (reason: overload, shutdown)",
            "reason",
        )
        self.latency = self._histogram(
            "end_of_speech_latency_seconds",
            "End of speech to utterance.end",
            _LATENCY_BUCKETS_S,
        )
        self.stage_seconds = self._histogram(
            "stage_seconds",
            "Time per pipeline stage and call",
            _STAGE_BUCKETS_S,
            "stage",
        )
        self.skipped_partials = self._counter(
            "skipped_partials",
            "emotion.partial events skipped because recognition was busy",
        )
        self.partial_revisions = self._counter(
            "partial_revisions",
            "Stable words of transcript.partial events that a later hypothesis or "
            "the final transcript changed",
        )
        self.speculations = self._counter(
            "speculations",
            "Utterances recognised while their hangover ran: used, or discarded "
            "because speech resumed",
            "outcome",
        )
        self.batch_size = self._histogram(
            "batch_size", "Utterances recognised per call", (1, 2, 3, 4, 6, 8, 12, 16)
        )
        self.queue_depth = self._gauge(
            "queue_depth", "Utterances waiting for recognition"
        )
        self.models_loaded = self._gauge(
            "models_loaded", "1 once the models are loaded and warm"
        )
        self.model_info = self._gauge(
            "model_info",
            "1 for each model in use (kind, name, version, sha256 prefix)",
            *("kind", "name", "version", "sha256"),
        )
        self.reloads = self._counter(
            "reloads", "SIGHUP reloads of configuration and models, by result", "result"
        )

    def _connections(self) -> None:
        self.subscribers = self._gauge(
            "subscribers", "/v1/events subscribers connected"
        )
        self.evicted_subscribers = self._counter(
            "evicted_subscribers", "Subscribers closed with 1013 for falling behind"
        )
        self.refused = self._counter(
            "refused_connections", "Handshakes refused, by reason", "reason"
        )
        self.connections = self._gauge(
            "connections", "WebSocket connections and uploads open", "path"
        )
        self.client_queue_depth = self._gauge(
            "client_queue_events",
            "Events waiting to be sent to their own stream's client (all streams)",
        )
        self.subscriber_queue_depth = self._gauge(
            "subscriber_queue_events", "Events waiting in the fullest subscriber queue"
        )
        self.dropped_clients = self._counter(
            "dropped_stream_clients",
            "Stream connections dropped for not reading their events",
        )

    def _sinks(self) -> None:
        self.sink_failures = self._counter(
            "sink_write_failures", "Failed writes to the JSONL sink"
        )
        # The Redis event sink (0 while none is configured).
        self.redis_buffered = self._gauge(
            "redis_buffered_events", "Events waiting to be written to Redis"
        )
        self.redis_written = self._counter(
            "redis_written_events", "Events appended to the Redis stream"
        )
        self.redis_dropped = self._counter(
            "redis_dropped_events",
            "Events dropped because the buffer was full while Redis was unreachable",
        )
        self.redis_outages = self._counter(
            "redis_outages", "Times Redis became unreachable for the event sink"
        )
        self.redis_write_seconds = self._histogram(
            "redis_write_seconds",
            "From emitting an event to Redis acknowledging its XADD",
            (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5, 30),
        )

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return bytes(generate_latest(self.registry))
