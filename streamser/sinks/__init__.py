"""Where events are kept: the JSON-lines event log, standard output and Redis Streams."""

from streamser.sinks.jsonl import JsonlSink, stdout_sink
from streamser.sinks.redis import RedisSink, RedisSinkOptions

__all__ = ["JsonlSink", "RedisSink", "RedisSinkOptions", "stdout_sink"]
