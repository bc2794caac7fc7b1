"""``streamser run``: files and standard input through the daemon's own engine.

Each file is a stream, all recognised at once; events reach the sink stream by stream
(``StreamOrder``), and the call report and CSV are written once every stream has ended.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from streamser.analytics.report import (
    CallRecorder,
    check_report_paths,
    write_reports,
)
from streamser.audio.sources import (
    AudioSource,
    ClipSource,
    FileSource,
    ProgressBar,
    drive,
    open_clips,
)
from streamser.config import Config
from streamser.daemon import Daemon, EventSink
from streamser.events import Envelope, StreamEnd
from streamser.messages import CHANNEL_MODES, local_start_message
from streamser.pipeline import StreamSession

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """How ``streamser run`` reads its files and what it writes besides events.

    Attributes:
        language: ISO 639-1 code of the speech; None to detect it per stream.
        realtime: play the files at real-time pace.
        channel_mode: "downmix" (one signal per file) or "separate" (each channel of
            a file recognised apart, with ``channel`` on its events).
        report: write the HTML call report here (None: no report).
        csv: write one CSV row per utterance here (None: no CSV).
        channel_names: names of the channels kept apart (``metadata.channels``);
            empty for none.
        progress: show a progress bar on standard error; None: when standard error
            is a terminal.
    """

    language: str | None = None
    realtime: bool = False
    channel_mode: str = "downmix"
    report: Path | None = None
    csv: Path | None = None
    channel_names: tuple[str, ...] = ()
    progress: bool | None = None

    def __post_init__(self) -> None:
        if self.channel_mode not in CHANNEL_MODES:
            raise ValueError(
                f"channel_mode must be one of {', '.join(CHANNEL_MODES)}, "
                f"not {self.channel_mode!r}"
            )


async def run_files(
    config: Config, files: Sequence[Path], options: RunOptions, sink: EventSink
) -> bool:
    """``streamser run``: read the files (``-``: standard input), recognise each as
    a stream (``run_sources``), write the reports.

    Returns:
        True when every file could be read; each one that could not is logged, and
        the others are still recognised.

    Raises:
        StreamserError: a model or a setting failed, or a report cannot be written.
    """
    check_report_paths(options.report, options.csv)
    sources, errors = open_clips(
        files, realtime=options.realtime, separate=options.channel_mode == "separate"
    )
    for err in errors:
        _LOGGER.error("%s", err)
    if sources:
        await run_sources(config, sources, options.language, sink, options)
    return not errors


async def run_sources(
    config: Config,
    sources: Sequence[AudioSource],
    language: str | None,
    sink: EventSink,
    outputs: RunOptions | None = None,
) -> None:
    """Recognise each source as its own stream, all at once, then return.

    ``sink`` gets the streams one after another in the order of ``sources`` (a
    stream's events wait until every stream before it has ended), whatever order
    they finish in. The JSONL file of ``config.output`` gets them as they come.
    A source whose chunks have several columns (a file read with its channels
    apart) is one stream with its channels kept apart.

    Args:
        config: the settings.
        sources: files or standard input; their names must differ.
        language: ISO 639-1 code of the speech; None to detect it per stream.
        sink: gets every event, stream by stream.
        outputs: its channel names, reports and progress bar are used (the reports
            are written once every stream has ended).

    Raises:
        ValueError: two sources have the same name.
        StreamserError: a model or a setting failed, or a report cannot be written.
    """
    outputs = outputs or RunOptions()
    names = [source.name for source in sources]
    if len(set(names)) != len(names):
        raise ValueError(f"stream names must differ: {names}")
    daemon = Daemon.build(config)
    bar = _progress_bar(sources, outputs)
    ordered = StreamOrder(names, sink if bar is None else _around(bar, sink))
    daemon.engine.add_sink(ordered)
    recorder = CallRecorder()
    if outputs.report is not None or outputs.csv is not None:
        daemon.engine.add_sink(recorder)

    def session(source: AudioSource) -> StreamSession:
        channels = source.channels if isinstance(source, ClipSource | FileSource) else 1
        start = local_start_message(
            source.name,
            language,
            channels,
            outputs.channel_names if channels > 1 else (),
        )
        return StreamSession(daemon.engine, start, source.name, live=source.live)

    progress = bar.advance if bar is not None else None
    try:
        await daemon.start_io()
        await asyncio.gather(*(drive(s, session(s), None, progress) for s in sources))
    finally:
        if bar is not None:
            bar.clear()
        await daemon.close_io()
        daemon.close()
    calls = [recorder.calls[name] for name in names if name in recorder.calls]
    write_reports(calls, outputs.csv, outputs.report)


def _progress_bar(
    sources: Sequence[AudioSource], outputs: RunOptions
) -> ProgressBar | None:
    """A bar over the clips' audio, when asked for or standard error is a terminal."""
    show = outputs.progress
    if show is None:
        show = sys.stderr.isatty()
    clips = [s for s in sources if isinstance(s, ClipSource | FileSource)]
    if not show or not clips:
        return None
    return ProgressBar(sum(c.samples for c in clips), sys.stderr)


def _around(bar: ProgressBar, sink: EventSink) -> EventSink:
    """``sink``, with the bar erased while it prints and drawn again after."""

    def show(envelope: Envelope) -> None:
        bar.clear()
        sink(envelope)
        bar.draw()

    return show


class StreamOrder:
    """A sink passing events on stream by stream, in a fixed order of streams.

    The events of the first stream that has not ended pass at once; those of later
    streams are held until every stream before them has ended (``stream.end``).
    Events of streams not in the order pass at once.
    """

    def __init__(self, stream_ids: Sequence[str], sink: EventSink) -> None:
        """Order ``sink``'s events by ``stream_ids``."""
        self._order = list(stream_ids)
        self._held: dict[str, list[Envelope]] = {sid: [] for sid in stream_ids}
        self._ended: set[str] = set()
        self._sink = sink

    def __call__(self, envelope: Envelope) -> None:
        """Pass ``envelope`` on, or hold it until its stream's turn."""
        stream_id = envelope.stream_id
        if stream_id not in self._held or stream_id == self._order[0]:
            self._sink(envelope)
        else:
            self._held[stream_id].append(envelope)
        if isinstance(envelope.body, StreamEnd) and stream_id in self._held:
            self._ended.add(stream_id)
        while self._order and self._order[0] in self._ended:
            del self._held[self._order.pop(0)]
            if self._order:
                for held in self._held[self._order[0]]:
                    self._sink(held)
                self._held[self._order[0]].clear()
