"""Tests of streamser.events: PROTOCOL.md events, sequencing and client messages."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamser.errors import ProtocolError
from streamser.events import (
    EVENT_TYPES,
    CallAlert,
    CallSummary,
    ChannelSummary,
    EmotionPartial,
    Envelope,
    ErrorEvent,
    Event,
    EventSequencer,
    EventsGap,
    ModalityScores,
    ModelInfo,
    SpeechStart,
    StreamEnd,
    StreamStart,
    TranscriptPartial,
    UtteranceEnd,
    WordTiming,
    default_origin,
    event_from_dict,
    rfc3339_now,
    samples_to_seconds,
)
from streamser.messages import StartMessage, parse_control, parse_start

SCORES = {"anger": 0.7, "neutral": 0.2, "sadness": 0.1}
EXAMPLES: list[Event] = [
    StreamStart(
        16000,
        "pcm_s16le",
        None,
        {"call": "c-17", "nested": {"agent": [1, 2]}},
        (ModelInfo("acoustic", "emotion-acoustic-v1", "1"),),
    ),
    StreamStart(8000, "mulaw", "de", {}, ()),
    SpeechStart(0, 1.234),
    EmotionPartial(3, 1.0, 2.5, "anger", SCORES),
    TranscriptPartial(3, 1.0, 2.5, "Der Lappen liegt", "Der Lappen", 0, channel=1),
    UtteranceEnd(
        2,
        0.5,
        3.25,
        "Der Lappen liegt auf dem Eisschrank.",
        "de",
        "anger",
        0.7,
        SCORES,
        {"acoustic": ModalityScores("anger", SCORES), "text": None},
        412.5,
    ),
    UtteranceEnd(0, 0.0, 1.0, None, None, "neutral", 1.0, {"neutral": 1.0}),
    UtteranceEnd(
        1,
        1.0,
        2.0,
        "Hi there.",
        "en",
        "neutral",
        1.0,
        {"neutral": 1.0},
        words=(WordTiming("Hi", 1.1, 1.3, 0.9), WordTiming("there.", 1.3, 1.8, 0.8)),
    ),
    StreamEnd(5, 12.345),
    ErrorEvent("partial_sample", "3 bytes is not whole samples", False),
    SpeechStart(4, 2.0, channel=1),
    CallAlert("sustained_anger", 0, (1, 3), "anger on channel 0 (agent)"),
    CallAlert("long_silence", None, (), "no one has spoken for 10 s"),
    CallSummary(
        62.5,
        1.25,
        10.5,
        (
            ChannelSummary(
                0, "agent", 2, {"anger": 2}, {"anger": 4.5}, 4.5, None, None
            ),
            ChannelSummary(1, None, 0, {}, {}, 0.0, 0.25, -0.5),
        ),
        (CallAlert("sustained_anger", 0, (1, 3), "anger on channel 0"),),
    ),
    EventsGap("12", "4001"),
]
"""One of each event type (plus variants), as the pipeline would build them."""


def test_examples_cover_every_type() -> None:
    assert {type(event) for event in EXAMPLES} == set(EVENT_TYPES.values())
    assert set(EVENT_TYPES) == {
        "stream.start",
        "speech.start",
        "emotion.partial",
        "transcript.partial",
        "utterance.end",
        "stream.end",
        "error",
        "call.alert",
        "call.summary",
        "events.gap",
    }


@pytest.mark.parametrize("body", EXAMPLES, ids=lambda event: event.TYPE)
def test_every_event_round_trips_through_json(body: Event) -> None:
    envelope = Envelope(7, "call-1", 3, "2026-11-21T23:01:02.345Z", body)
    text = envelope.to_json()
    data = json.loads(text)
    assert list(data)[:5] == ["type", "id", "stream_id", "seq", "time"]
    assert data["type"] == body.TYPE == envelope.type
    assert (data["id"], data["stream_id"], data["seq"]) == (7, "call-1", 3)
    assert Envelope.from_json(text) == envelope
    assert Envelope.from_dict(data) == envelope
    assert event_from_dict(data) == body


def test_utterance_end_wire_shape() -> None:
    body = EXAMPLES[5]
    data = Envelope(1, "s", 0, "t", body).to_dict()
    assert data["modalities"] == {
        "acoustic": {"label": "anger", "scores": SCORES},
        "text": None,
    }
    assert set(data) == {
        "type",
        "id",
        "origin",
        "stream_id",
        "seq",
        "time",
        "utterance_id",
        "start",
        "end",
        "transcript",
        "language",
        "label",
        "confidence",
        "scores",
        "modalities",
        "latency_ms",
        "asr",
        "channel",
        "arousal",
        "valence",
        "sentiment",
    }
    assert data["asr"] == "ok"
    # Both modalities are always present, even when the body names neither.
    bare = UtteranceEnd(0, 0.0, 1.0, "", None, "calm", 1.0, {"calm": 1.0}, {})
    assert bare.to_dict()["modalities"] == {"acoustic": None, "text": None}


def test_stream_start_lists_models() -> None:
    data = EXAMPLES[0].to_dict()
    assert data["models"] == [
        {"kind": "acoustic", "name": "emotion-acoustic-v1", "version": "1"}
    ]


def test_unknown_extra_fields_are_ignored() -> None:
    data = Envelope(1, "s", 0, "t", SpeechStart(1, 0.5)).to_dict()
    data["added_in_a_later_version"] = True
    assert Envelope.from_dict(data).body == SpeechStart(1, 0.5)


@pytest.mark.parametrize(
    "change",
    [
        {"type": "speech.stop"},
        {"type": None},
        {"utterance_id": "1"},
        {"utterance_id": True},
        {"start": "0.5"},
        {"start": None},
        {"id": 1.5},
        {"stream_id": 5},
    ],
)
def test_malformed_events_are_rejected(change: dict[str, Any]) -> None:
    data = Envelope(1, "s", 0, "t", SpeechStart(1, 0.5)).to_dict()
    data.update(change)
    with pytest.raises(ProtocolError) as caught:
        Envelope.from_dict(data)
    assert caught.value.code == "malformed_event"


@pytest.mark.parametrize("body", EXAMPLES, ids=lambda event: event.TYPE)
def test_every_missing_field_is_rejected(body: Event) -> None:
    full = Envelope(1, "s", 0, "t", body).to_dict()
    for name in full:
        data = {key: value for key, value in full.items() if key != name}
        if name == "words":  # added after version 1: optional, read as absent
            assert Envelope.from_dict(data).body == replace(body, words=None)
            continue
        with pytest.raises(ProtocolError, match=name if name != "type" else "type"):
            Envelope.from_dict(data)


def test_bad_nested_values_are_rejected() -> None:
    data = EXAMPLES[5].to_dict() | {"type": "utterance.end"}
    for bad in (
        {"scores": {"anger": "high"}},
        {"scores": [0.5]},
        {"modalities": {"acoustic": {"label": "anger"}}},
        {"modalities": "none"},
        {"confidence": float("nan")},
    ):
        with pytest.raises(ProtocolError):
            event_from_dict(data | bad)
    with pytest.raises(ProtocolError):
        event_from_dict(
            EXAMPLES[0].to_dict() | {"type": "stream.start", "models": [{}]}
        )
    with pytest.raises(ProtocolError):
        Envelope.from_json("[1, 2]")
    with pytest.raises(ProtocolError):
        Envelope.from_json("{nope")


def test_non_finite_numbers_never_reach_the_wire() -> None:
    body = StreamEnd(1, float("nan"))
    with pytest.raises(ValueError, match="JSON"):
        Envelope(1, "s", 0, "t", body).to_json()


def test_error_event_from_protocol_error() -> None:
    error = ProtocolError("unsupported_encoding", "no mp3", fatal=True)
    assert ErrorEvent.from_exception(error) == ErrorEvent(
        "unsupported_encoding", "no mp3", True
    )


def test_samples_to_seconds() -> None:
    assert samples_to_seconds(0) == 0.0
    assert samples_to_seconds(16000) == 1.0
    assert samples_to_seconds(16007) == 1.0
    assert samples_to_seconds(16008) == 1.001  # 1.0005 s rounds half up
    assert samples_to_seconds(24008) == 1.501
    assert samples_to_seconds(123456789) == 7716.049


def test_time_is_rfc3339_utc_with_milliseconds() -> None:
    pattern = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert re.fullmatch(pattern, rfc3339_now())
    envelope = EventSequencer().stamp("s", SpeechStart(0, 0.0))
    assert re.fullmatch(pattern, envelope.time)


def test_sequencer_ids_and_seqs() -> None:
    sequencer = EventSequencer(clock=lambda: "2026-11-21T23:01:02.345Z")
    streams = ["a", "b", "a", "c", "a", "b"]
    stamped = [sequencer.stamp(s, StreamEnd(0, 0.0)) for s in streams]
    assert [e.id for e in stamped] == [1, 2, 3, 4, 5, 6]
    assert [e.seq for e in stamped] == [0, 0, 1, 0, 2, 1]
    assert sequencer.last_id == 6
    sequencer.forget("a")
    again = sequencer.stamp("a", StreamEnd(0, 0.0))
    assert (again.id, again.seq) == (7, 0)
    assert again.time == "2026-11-21T23:01:02.345Z"


def test_origin_names_the_daemon() -> None:
    assert EventSequencer().stamp("s", StreamEnd(0, 0.0)).origin == default_origin()
    named = EventSequencer(origin="host-b:8765").stamp("s", StreamEnd(0, 0.0))
    data = named.to_dict()
    assert data["origin"] == "host-b:8765"
    assert Envelope.from_dict(data) == named
    assert default_origin(8765) == f"{default_origin()}:8765"


def test_sequencer_is_thread_safe() -> None:
    sequencer = EventSequencer()
    per_thread = 500
    results: dict[str, list[Envelope]] = {}
    barrier = threading.Barrier(8)

    def worker(stream_id: str) -> None:
        barrier.wait(timeout=30)
        results[stream_id] = [
            sequencer.stamp(stream_id if i % 2 else "shared", SpeechStart(i, 0.0))
            for i in range(per_thread)
        ]

    threads = [threading.Thread(target=worker, args=(f"s{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    everything = [e for envelopes in results.values() for e in envelopes]
    assert sorted(e.id for e in everything) == list(range(1, 8 * per_thread + 1))
    for envelopes in results.values():
        ids = [e.id for e in envelopes]
        assert ids == sorted(ids)  # each thread saw strictly increasing ids
    by_stream: dict[str, list[Envelope]] = {}
    for envelope in sorted(everything, key=lambda e: e.id):
        by_stream.setdefault(envelope.stream_id, []).append(envelope)
    for envelopes in by_stream.values():
        assert [e.seq for e in envelopes] == list(range(len(envelopes)))
    assert len(by_stream["shared"]) == 8 * per_thread // 2


PROTOCOL_EXAMPLE = (
    '{"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le",\n'
    '   "channels": 1, "language": null, "stream_id": null, "metadata": {}}'
)


def test_parse_start_accepts_the_protocol_example() -> None:
    assert parse_start(PROTOCOL_EXAMPLE) == StartMessage()
    assert parse_start('{"type": "start"}') == StartMessage(
        16000, "pcm_s16le", 1, None, None, {}
    )


def test_parse_start_reads_every_field() -> None:
    message = parse_start(
        json.dumps(
            {
                "type": "start",
                "sample_rate": 8000,
                "encoding": "alaw",
                "channels": 2,
                "language": "fa",
                "stream_id": "call-17:agent.3_x",
                "metadata": {"call": "17", "agent": 3},
                "future_field": [1],
            }
        ).encode()
    )
    assert message == StartMessage(
        8000, "alaw", 2, "fa", "call-17:agent.3_x", {"call": "17", "agent": 3}
    )
    assert parse_start('{"type": "start", "metadata": null}').metadata == {}
    assert parse_start(f'{{"type": "start", "stream_id": "{"x" * 128}"}}').stream_id


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("", "malformed_json"),
        ("{", "malformed_json"),
        ("[]", "malformed_json"),
        ('"start"', "malformed_json"),
        ("[" * 100000, "malformed_json"),
        ('{"type": "stop"}', "unexpected_message"),
        ('{"sample_rate": 16000}', "unexpected_message"),
        ('{"type": "start", "encoding": "opus"}', "unsupported_encoding"),
        ('{"type": "start", "encoding": null}', "unsupported_encoding"),
        ('{"type": "start", "encoding": ["pcm_s16le"]}', "unsupported_encoding"),
        ('{"type": "start", "sample_rate": 7999}', "unsupported_sample_rate"),
        ('{"type": "start", "sample_rate": 96000}', "unsupported_sample_rate"),
        ('{"type": "start", "sample_rate": 16000.0}', "unsupported_sample_rate"),
        ('{"type": "start", "sample_rate": true}', "unsupported_sample_rate"),
        ('{"type": "start", "sample_rate": "16000"}', "unsupported_sample_rate"),
        ('{"type": "start", "channels": 0}', "unsupported_channels"),
        ('{"type": "start", "channels": 9}', "unsupported_channels"),
        ('{"type": "start", "channels": null}', "unsupported_channels"),
        ('{"type": "start", "channel_mode": "split"}', "invalid_channel_mode"),
        ('{"type": "start", "channel_mode": null}', "invalid_channel_mode"),
        ('{"type": "start", "channel_mode": "separate"}', "invalid_channel_mode"),
        (
            '{"type": "start", "channels": 1, "channel_mode": "separate"}',
            "invalid_channel_mode",
        ),
        ('{"type": "start", "language": "DE"}', "invalid_language"),
        ('{"type": "start", "language": "deu"}', "invalid_language"),
        ('{"type": "start", "language": ""}', "invalid_language"),
        ('{"type": "start", "language": 7}', "invalid_language"),
        ('{"type": "start", "stream_id": ""}', "invalid_stream_id"),
        ('{"type": "start", "stream_id": "a b"}', "invalid_stream_id"),
        ('{"type": "start", "stream_id": "a/b"}', "invalid_stream_id"),
        ('{"type": "start", "stream_id": 12}', "invalid_stream_id"),
        (f'{{"type": "start", "stream_id": "{"x" * 129}"}}', "invalid_stream_id"),
        ('{"type": "start", "metadata": []}', "invalid_metadata"),
        ('{"type": "start", "metadata": "x"}', "invalid_metadata"),
        ('{"type": "start", "metadata": false}', "invalid_metadata"),
        ('{"type": "start", "metadata": {"x": NaN}}', "invalid_metadata"),
        (
            f'{{"type": "start", "metadata": {{"x": "{"y" * 4096}"}}}}',
            "invalid_metadata",
        ),
    ],
)
def test_parse_start_rejects(text: str, code: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_start(text)
    assert caught.value.code == code
    assert caught.value.fatal


def test_metadata_limit_is_4096_bytes_of_utf8_json() -> None:
    # {"x":"..."} is 8 bytes of JSON around the value; "ä" is 2 bytes of UTF-8.
    fits = json.dumps({"type": "start", "metadata": {"x": "ä" * 2044}})
    assert parse_start(fits).metadata == {"x": "ä" * 2044}
    too_big = json.dumps({"type": "start", "metadata": {"x": "ä" * 2045}})
    with pytest.raises(ProtocolError, match="4096"):
        parse_start(too_big)


def test_parse_start_reads_the_channel_mode_and_names() -> None:
    message = parse_start(
        '{"type": "start", "channels": 2, "channel_mode": "separate", '
        '"metadata": {"channels": ["agent", "customer"]}}'
    )
    assert message.separate and message.channel_mode == "separate"
    assert [message.channel_name(i) for i in range(3)] == ["agent", "customer", None]
    assert not parse_start('{"type": "start", "channels": 2}').separate
    assert parse_start('{"type": "start", "channels": 8, "channel_mode": "separate"}')
    odd = parse_start(
        '{"type": "start", "channels": 2, "channel_mode": "separate", '
        '"metadata": {"channels": [7, "b"]}}'
    )
    assert [odd.channel_name(0), odd.channel_name(1)] == [None, "b"]
    # A downmix is no one channel: the names are not applied to it.
    mixed = parse_start(
        '{"type": "start", "channels": 2, "metadata": {"channels": ["a", "b"]}}'
    )
    assert mixed.channel_name(0) is None


def test_parse_control() -> None:
    assert parse_control('{"type": "flush"}') == "flush"
    assert parse_control('{"type": "summary"}') == "summary"
    assert parse_control(b'{"type": "stop", "reason": "done"}') == "stop"
    for text, code in [
        ('{"type": "start"}', "unexpected_message"),
        ('{"type": "FLUSH"}', "unexpected_message"),
        ("{}", "unexpected_message"),
        ("flush", "malformed_json"),
        ("[]", "malformed_json"),
    ]:
        with pytest.raises(ProtocolError) as caught:
            parse_control(text)
        assert (caught.value.code, caught.value.fatal) == (code, False)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
_start_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["start", "flush", "stop"]) | _json_values,
        "sample_rate": st.integers(0, 100000) | _json_values,
        "encoding": st.sampled_from(["pcm_s16le", "mulaw", "opus"]) | _json_values,
        "channels": st.integers(-1, 10) | _json_values,
        "channel_mode": st.sampled_from(["downmix", "separate"]) | _json_values,
        "language": st.sampled_from([None, "de", "EN"]) | _json_values,
        "stream_id": st.text(max_size=140) | _json_values,
        "metadata": _json_values,
    },
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | _start_like.map(json.dumps))
def test_parsers_only_raise_protocol_errors(text: str) -> None:
    for parse in (parse_start, parse_control):
        try:
            parse(text)
        except ProtocolError as error:
            assert re.fullmatch(r"[a-z_]+", error.code)


_event_like = st.fixed_dictionaries(
    {"type": st.sampled_from(sorted(EVENT_TYPES)) | _json_values},
    optional={
        name: _json_values
        for name in (
            "id",
            "stream_id",
            "seq",
            "time",
            "utterance_id",
            "start",
            "end",
            "label",
            "scores",
            "modalities",
            "models",
            "metadata",
            "fatal",
        )
    },
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | _event_like.map(json.dumps))
def test_event_parsing_only_raises_protocol_errors(text: str) -> None:
    try:
        Envelope.from_json(text)
    except ProtocolError as error:
        assert error.code == "malformed_event"
