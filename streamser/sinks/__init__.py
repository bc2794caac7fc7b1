"""Where events are kept: the JSON-lines event log and standard output."""

from streamser.sinks.jsonl import JsonlSink, stdout_sink

__all__ = ["JsonlSink", "stdout_sink"]
