"""Prometheus metrics of one streamser process, on a registry of its own."""

from __future__ import annotations

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
    """Every metric streamser exports; one instance per server or run."""

    def __init__(self) -> None:
        """Create the metrics on a fresh registry."""
        self.registry = CollectorRegistry()
        r = self.registry
        self.active_streams = Gauge(
            "streamser_active_streams", "Audio streams open now", registry=r
        )
        self.streams = Counter(
            "streamser_streams", "Audio streams accepted", registry=r
        )
        self.subscribers = Gauge(
            "streamser_subscribers", "/v1/events subscribers connected", registry=r
        )
        self.evicted_subscribers = Counter(
            "streamser_evicted_subscribers",
            "Subscribers closed with 1013 for falling behind",
            registry=r,
        )
        self.utterances = Counter(
            "streamser_utterances", "Utterances recognised", registry=r
        )
        self.dropped_utterances = Counter(
            "streamser_dropped_utterances",
            "Utterances shed because recognition lagged",
            registry=r,
        )
        self.skipped_asr = Counter(
            "streamser_skipped_asr",
            "Utterances recognised without ASR to keep up (reason: overload, shutdown)",
            ["reason"],
            registry=r,
        )
        self.audio_seconds = Counter(
            "streamser_audio_seconds", "Seconds of audio received", registry=r
        )
        self.latency = Histogram(
            "streamser_end_of_speech_latency_seconds",
            "End of speech to utterance.end",
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.stage_seconds = Histogram(
            "streamser_stage_seconds",
            "Time per pipeline stage and call",
            ["stage"],
            buckets=_STAGE_BUCKETS_S,
            registry=r,
        )
        self.skipped_partials = Counter(
            "streamser_skipped_partials",
            "emotion.partial events skipped because recognition was busy",
            registry=r,
        )
        self.speculations = Counter(
            "streamser_speculations",
            "Utterances recognised while their hangover ran: used, or discarded "
            "because speech resumed",
            ["outcome"],
            registry=r,
        )
        self.batch_size = Histogram(
            "streamser_batch_size",
            "Utterances recognised per call",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16),
            registry=r,
        )
        self.queue_depth = Gauge(
            "streamser_queue_depth", "Utterances waiting for recognition", registry=r
        )
        self.errors = Counter(
            "streamser_errors", "Error events sent, by code", ["code"], registry=r
        )
        self.models_loaded = Gauge(
            "streamser_models_loaded",
            "1 once the models are loaded and warm",
            registry=r,
        )
        self.sink_failures = Counter(
            "streamser_sink_write_failures",
            "Failed writes to the JSONL sink",
            registry=r,
        )

        self.model_info = Gauge(
            "streamser_model_info",
            "1 for each model in use (kind, name, version, sha256 prefix)",
            ["kind", "name", "version", "sha256"],
            registry=r,
        )
        self.reloads = Counter(
            "streamser_reloads",
            "SIGHUP reloads of configuration and models, by result",
            ["result"],
            registry=r,
        )
        self.refused = Counter(
            "streamser_refused_connections",
            "Handshakes refused, by reason",
            ["reason"],
            registry=r,
        )
        self.connections = Gauge(
            "streamser_connections", "WebSocket connections open", ["path"], registry=r
        )
        self.client_queue_depth = Gauge(
            "streamser_client_queue_events",
            "Events waiting to be sent to their own stream's client (all streams)",
            registry=r,
        )
        self.subscriber_queue_depth = Gauge(
            "streamser_subscriber_queue_events",
            "Events waiting in the fullest subscriber queue",
            registry=r,
        )
        self.dropped_clients = Counter(
            "streamser_dropped_stream_clients",
            "Stream connections dropped for not reading their events",
            registry=r,
        )
        self.draining = Gauge("streamser_draining", "1 while shutting down", registry=r)
        # The Redis event sink (0 while none is configured).
        self.redis_buffered = Gauge(
            "streamser_redis_buffered_events",
            "Events waiting to be written to Redis",
            registry=r,
        )
        self.redis_written = Counter(
            "streamser_redis_written_events",
            "Events appended to the Redis stream",
            registry=r,
        )
        self.redis_dropped = Counter(
            "streamser_redis_dropped_events",
            "Events dropped because the buffer was full while Redis was unreachable",
            registry=r,
        )
        self.redis_outages = Counter(
            "streamser_redis_outages",
            "Times Redis became unreachable for the event sink",
            registry=r,
        )
        self.redis_write_seconds = Histogram(
            "streamser_redis_write_seconds",
            "From emitting an event to Redis acknowledging its XADD",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5, 30),
            registry=r,
        )
        ProcessCollector(registry=r)  # process_resident_memory_bytes and friends

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return bytes(generate_latest(self.registry))
