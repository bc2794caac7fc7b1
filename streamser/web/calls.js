// The dashboard's model: calls (streams) built from PROTOCOL.md events, in order.
// Unknown event types and fields are ignored, so a newer server still works.

const MAX_ENDED_CALLS = 50;

/** A finite number or null (arousal, valence and times may be null or absent). */
function numberOrNull(value) {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

function channelOf(event) {
  return Number.isInteger(event.channel) ? event.channel : 0;
}

/** One stream as the dashboard shows it. */
export class Call {
  constructor(streamId, time) {
    this.streamId = streamId;
    this.metadata = {};
    this.channelMode = "downmix";
    this.live = true;
    this.startTime = time; // server wall clock of its first event
    this.audioSeconds = null; // from stream.end
    this.position = 0; // furthest stream second heard of
    this.utterances = new Map(); // "channel:utterance_id" -> utterance
    this.currentLabel = null; // the latest label, partial or final
    this.alerts = [];
    this.summary = null;
    this.errors = [];
    this.version = 0; // bumped on every change, so views redraw only what changed
  }

  /** The name of a channel: from the summary, else stream.start's metadata. */
  channelName(channel) {
    const fromSummary = this.summary?.channels?.find((c) => c.channel === channel);
    if (fromSummary && typeof fromSummary.name === "string") return fromSummary.name;
    // metadata.channels names the channels only when they are kept apart.
    const names = this.channelMode === "separate" ? this.metadata.channels : null;
    if (Array.isArray(names) && typeof names[channel] === "string") return names[channel];
    return `channel ${channel}`;
  }

  /** Channels with speech or in the summary, in order (at least channel 0). */
  channels() {
    const seen = new Set([...this.utterances.values()].map((u) => u.channel));
    for (const entry of this.summary?.channels ?? []) {
      if (Number.isInteger(entry.channel)) seen.add(entry.channel);
    }
    if (seen.size === 0) seen.add(0);
    return [...seen].sort((a, b) => a - b);
  }

  /** Utterances by start time. */
  sortedUtterances() {
    return [...this.utterances.values()].sort(
      (a, b) => a.start - b.start || a.channel - b.channel || a.id - b.id,
    );
  }

  /** The label with the most seconds of speech (final utterances; the summary's
   * seconds once there is one), else the latest label heard; null before any. */
  dominantLabel() {
    const seconds = new Map();
    const add = (label, value) => seconds.set(label, (seconds.get(label) ?? 0) + value);
    if (Array.isArray(this.summary?.channels)) {
      for (const entry of this.summary.channels) {
        for (const [label, value] of Object.entries(entry.label_seconds ?? {})) {
          if (typeof value === "number") add(label, value);
        }
      }
    } else {
      for (const u of this.utterances.values()) {
        if (u.final && u.label) add(u.label, Math.max(0, u.end - u.start));
      }
    }
    let best = null;
    for (const [label, value] of seconds) {
      if (best === null || value > seconds.get(best)) best = label;
    }
    return best ?? this.currentLabel;
  }

  /** A short title: a call id or file name from the metadata, else the stream id. */
  title() {
    for (const key of ["call_id", "call", "name", "title", "file"]) {
      const value = this.metadata[key];
      if (typeof value === "string" || typeof value === "number") return String(value);
    }
    return this.streamId;
  }

  utterance(event) {
    const channel = channelOf(event);
    const key = `${channel}:${event.utterance_id}`;
    let utterance = this.utterances.get(key);
    if (!utterance) {
      const start = numberOrNull(event.start) ?? 0;
      utterance = {
        key,
        id: event.utterance_id,
        channel,
        start,
        end: start,
        label: null,
        confidence: null,
        transcript: null,
        asr: null,
        arousal: null,
        valence: null,
        final: false,
      };
      this.utterances.set(key, utterance);
    }
    return utterance;
  }

  apply(event) {
    switch (event.type) {
      case "stream.start":
        this.metadata =
          event.metadata && typeof event.metadata === "object" ? event.metadata : {};
        this.channelMode = event.channel_mode ?? "downmix";
        this.startTime = event.time;
        this.live = true;
        break;
      case "speech.start":
        this.utterance(event);
        break;
      case "emotion.partial": {
        const utterance = this.utterance(event);
        if (utterance.final) break; // never after utterance.end, but be safe
        utterance.label = event.label;
        utterance.end = numberOrNull(event.end) ?? utterance.end;
        utterance.arousal = numberOrNull(event.arousal);
        utterance.valence = numberOrNull(event.valence);
        this.currentLabel = event.label;
        break;
      }
      case "transcript.partial": {
        const utterance = this.utterance(event);
        if (utterance.final) break; // a late partial never replaces the final text
        utterance.partialText = typeof event.text === "string" ? event.text : null;
        utterance.stableText = typeof event.stable === "string" ? event.stable : "";
        break;
      }
      case "utterance.end": {
        const utterance = this.utterance(event);
        Object.assign(utterance, {
          start: numberOrNull(event.start) ?? utterance.start,
          end: numberOrNull(event.end) ?? utterance.end,
          label: event.label,
          confidence: numberOrNull(event.confidence),
          transcript: typeof event.transcript === "string" ? event.transcript : null,
          asr: event.asr ?? null,
          arousal: numberOrNull(event.arousal),
          valence: numberOrNull(event.valence),
          words: event.modalities?.text?.label ?? null,
          sentiment: event.sentiment?.label ?? null,
          final: true,
        });
        this.currentLabel = event.label;
        break;
      }
      case "call.alert":
        this.alerts.push({
          id: event.id,
          rule: String(event.rule),
          channel: Number.isInteger(event.channel) ? event.channel : null,
          utteranceIds: Array.isArray(event.utterance_ids) ? event.utterance_ids : [],
          message: String(event.message ?? ""),
        });
        break;
      case "call.summary":
        this.summary = event;
        break;
      case "stream.end":
        this.live = false;
        this.audioSeconds = numberOrNull(event.audio_seconds);
        break;
      case "error":
        this.errors.push({ code: String(event.code), message: String(event.message) });
        if (event.fatal && !this.utterances.size) this.live = false;
        break;
      default:
        return false;
    }
    for (const value of [event.end, event.start, event.audio_seconds]) {
      const seconds = numberOrNull(value);
      if (seconds !== null && seconds > this.position) this.position = seconds;
    }
    this.version += 1;
    return true;
  }
}

/** Every call seen, live ones and the latest ended ones. */
export class CallStore {
  constructor() {
    this.calls = new Map(); // stream_id -> Call, in order of first event
    this.version = 0;
  }

  /** Applies one event; returns the call it changed, or null. */
  apply(event) {
    if (typeof event.stream_id !== "string") return null;
    let call = this.calls.get(event.stream_id);
    // An error on an unknown stream is a refused start: no call to show.
    if (!call && event.type === "error") return null;
    if (!call || (event.type === "stream.start" && !call.live)) {
      // New, or a stream id reused after its stream ended: a new call.
      this.calls.delete(event.stream_id);
      call = new Call(event.stream_id, event.time);
      this.calls.set(event.stream_id, call);
    }
    if (!call.apply(event)) {
      if (call.version === 0) this.calls.delete(event.stream_id);
      return null;
    }
    if (event.type === "stream.end") this.prune();
    this.version += 1;
    return call;
  }

  /** The server restarted: calls it had open will never end; mark them ended. */
  serverRestarted() {
    for (const call of this.calls.values()) {
      if (call.live) {
        call.live = false;
        call.errors.push({ code: "server_restarted", message: "the server restarted during this call" });
        call.version += 1;
      }
    }
    this.version += 1;
  }

  prune() {
    const ended = [...this.calls.values()].filter((c) => !c.live);
    for (const call of ended.slice(0, Math.max(0, ended.length - MAX_ENDED_CALLS))) {
      this.calls.delete(call.streamId);
    }
  }

  /** Newest first. */
  list() {
    return [...this.calls.values()].reverse();
  }
}
