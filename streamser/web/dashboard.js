// The streamser dashboard: live and recent calls from /v1/events, and one call's
// timeline, transcript, summary and alerts. Plain DOM and SVG, no dependencies.
// Every text from the server goes through textContent, never innerHTML.

import { CallStore } from "./calls.js";
import { EventConnection } from "./connection.js";

const SVG = "http://www.w3.org/2000/svg";
const TOKEN_KEY = "streamser-token";
const KNOWN_LABELS = new Set([
  "anger", "boredom", "calm", "disgust", "fear",
  "happiness", "neutral", "sadness", "surprise",
]);
const STATE_TEXT = {
  connecting: "connecting…",
  live: "live",
  reconnecting: "reconnecting…",
  unavailable: "server unavailable, retrying…",
  unauthorized: "not authorised",
};

const store = new CallStore();
const page = {
  selected: null, // stream id
  followLatest: true, // until the user picks a call, show the newest live one
  drawnCall: null,
  drawnVersion: -1,
  scheduled: false,
};

/** An element with attributes and children (strings become text nodes). */
function h(tag, attributes = {}, ...children) {
  const element = tag.startsWith("svg:")
    ? document.createElementNS(SVG, tag.slice(4))
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value !== null && value !== undefined && value !== false) {
      element.setAttribute(name, String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return element;
}

function labelClass(label) {
  return `label-${KNOWN_LABELS.has(label) ? label : "other"}`;
}

/** Seconds as m:ss.s */
function clock(seconds) {
  const minutes = Math.floor(seconds / 60);
  return `${minutes}:${(seconds - minutes * 60).toFixed(1).padStart(4, "0")}`;
}

function wallClock(time) {
  const date = new Date(time);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleTimeString();
}

function signed(value) {
  return value === null || value === undefined ? "–" : value.toFixed(2);
}

// -- call list -------------------------------------------------------------------

const listItems = new Map(); // stream id -> {item, button, drawn}

/** The call list; items are kept and redrawn only when their call changed, so a
 * click is never lost to a redraw. */
function renderList() {
  const list = document.getElementById("call-list");
  const calls = store.list();
  document.getElementById("no-calls").hidden = calls.length > 0;
  for (const id of listItems.keys()) {
    if (!store.calls.has(id)) listItems.delete(id);
  }
  const items = calls.map((call) => {
    let entry = listItems.get(call.streamId);
    if (!entry || entry.call !== call) {
      const button = h("button", { type: "button" });
      button.addEventListener("click", () => select(call.streamId, true));
      entry = { call, button, item: h("li", { "data-stream-id": call.streamId }, button) };
      listItems.set(call.streamId, entry);
    }
    const drawn = `${call.version}:${call.streamId === page.selected}`;
    if (entry.drawn !== drawn) {
      entry.drawn = drawn;
      drawListItem(call, entry);
    }
    return entry.item;
  });
  const current = [...list.children];
  if (current.length !== items.length || items.some((item, i) => item !== current[i])) {
    list.replaceChildren(...items);
  }
}

function drawListItem(call, { item, button }) {
  const classes = ["call", call.live ? "live" : "ended"];
  if (call.streamId === page.selected) classes.push("selected");
  if (call.alerts.length) classes.push("alerted");
  item.className = classes.join(" ");
  const dominant = call.dominantLabel();
  button.replaceChildren(
    ...[
      h("span", { class: "call-title" }, call.title()),
      h("span", { class: "call-status" }, call.live ? "live" : "ended"),
      dominant
        ? h(
            "span",
            {
              class: `chip ${labelClass(dominant)}`,
              "data-role": "emotion",
              title: "the call's dominant emotion, by seconds of speech",
            },
            dominant,
          )
        : h("span", { class: "chip muted", "data-role": "emotion" }, "…"),
      call.alerts.length
        ? h(
            "span",
            { class: "alert-count", "data-role": "alert-count" },
            `${call.alerts.length} alert${call.alerts.length > 1 ? "s" : ""}`,
          )
        : null,
      h(
        "span",
        { class: "call-meta" },
        `${wallClock(call.startTime)} · ${clock(call.audioSeconds ?? call.position)}`,
      ),
    ].filter(Boolean),
  );
}

function select(streamId, byUser) {
  page.selected = streamId;
  if (byUser) {
    page.followLatest = false;
    history.replaceState(null, "", `${location.search}#call=${encodeURIComponent(streamId)}`);
  }
  schedule();
}

// -- call view -------------------------------------------------------------------

function renderCall(call) {
  const view = document.getElementById("call-view");
  if (!call) {
    view.replaceChildren(h("p", { class: "muted" }, "Select a call."));
    return;
  }
  const transcriptBox = view.querySelector(".transcript");
  const atBottom =
    !transcriptBox ||
    page.drawnCall !== call ||
    transcriptBox.scrollTop + transcriptBox.clientHeight >= transcriptBox.scrollHeight - 8;
  const scrollTop = transcriptBox ? transcriptBox.scrollTop : 0;
  const metadata = Object.entries(call.metadata)
    .filter(([, value]) => typeof value !== "object" || value === null)
    .map(([key, value]) => `${key}: ${value}`)
    .join(" · ");
  const parts = [
    h(
      "div",
      { class: "call-header" },
      h("h2", {}, call.title()),
      h("span", { class: `call-status ${call.live ? "live" : "ended"}` }, call.live ? "live" : "ended"),
      h("span", { class: "muted" }, `stream ${call.streamId}`),
      metadata ? h("span", { class: "muted" }, metadata) : null,
    ),
    renderAlerts(call),
    h("h3", {}, "Timeline"),
    renderTimeline(call),
    call.summary ? renderSummary(call) : null,
    h("h3", {}, "Transcript"),
    renderTranscript(call),
    call.errors.length
      ? h(
          "ul",
          { class: "errors" },
          call.errors.map((e) => h("li", {}, `${e.code}: ${e.message}`)),
        )
      : null,
  ];
  view.replaceChildren(...parts.filter(Boolean));
  const box = view.querySelector(".transcript");
  // Follow new lines unless the reader scrolled up.
  if (box) box.scrollTop = atBottom ? box.scrollHeight : scrollTop;
}

function renderAlerts(call) {
  if (!call.alerts.length) return null;
  return h(
    "section",
    { class: "alerts", "aria-label": "Alerts" },
    h("h3", {}, `Alerts (${call.alerts.length})`),
    h(
      "ul",
      {},
      call.alerts.map((alert) =>
        h(
          "li",
          { class: "alert", "data-rule": alert.rule },
          h("strong", {}, alert.rule),
          alert.channel === null ? "" : ` · ${call.channelName(alert.channel)}`,
          ` · ${alert.message}`,
          alert.utteranceIds.length
            ? h("span", { class: "muted" }, ` (utterances ${alert.utteranceIds.join(", ")})`)
            : null,
        ),
      ),
    ),
  );
}

function tickStep(duration) {
  for (const step of [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800]) {
    if (duration / step <= 10) return step;
  }
  return 3600;
}

function renderTimeline(call) {
  const width = 1000;
  const gutter = 110;
  const utterances = call.sortedUtterances();
  const withLines = utterances.some((u) => u.arousal !== null || u.valence !== null);
  const rowHeight = withLines ? 86 : 44;
  const channels = call.channels();
  const height = 24 + channels.length * rowHeight;
  const duration = Math.max(
    10,
    call.position,
    call.audioSeconds ?? 0,
    call.summary?.duration_s ?? 0,
  );
  const x = (seconds) => gutter + (seconds / duration) * (width - gutter - 24);
  const svg = h("svg:svg", {
    class: "timeline",
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": "Emotion timeline per channel",
  });
  const step = tickStep(duration);
  for (let t = 0; t <= duration + 1e-6; t += step) {
    svg.append(
      h("svg:line", { class: "tick", x1: x(t), x2: x(t), y1: 16, y2: height }),
      h("svg:text", { class: "tick-label", x: x(t), y: 12 }, clock(t).replace(/\.0$/, "")),
    );
  }
  channels.forEach((channel, row) => {
    const top = 24 + row * rowHeight;
    svg.append(
      h("svg:text", { class: "channel-name", x: 4, y: top + 22 }, call.channelName(channel)),
    );
    const mine = utterances.filter((u) => u.channel === channel);
    for (const u of mine) {
      const classes = ["segment", labelClass(u.label)];
      if (!u.final) classes.push("partial");
      svg.append(
        h(
          "svg:rect",
          {
            class: classes.join(" "),
            x: x(u.start),
            y: top + 6,
            width: Math.max(2, x(u.end) - x(u.start)),
            height: 24,
            rx: 3,
          },
          h(
            "svg:title",
            {},
            `${clock(u.start)}–${clock(u.end)} ${u.label ?? "…"}${u.transcript ? `: ${u.transcript}` : ""}`,
          ),
        ),
      );
    }
    if (withLines) {
      const middle = top + 60;
      svg.append(
        h("svg:line", { class: "zero", x1: gutter, x2: width - 24, y1: middle, y2: middle }),
        h("svg:text", { class: "axis-label", x: 4, y: middle + 4 }, "arousal/valence"),
      );
      // The scale: both run from -1 to +1 (PROTOCOL.md), 22 px each way.
      for (const [value, text] of [[1, "+1"], [0, "0"], [-1, "−1"]]) {
        const y = middle - value * 22;
        if (value !== 0) {
          svg.append(h("svg:line", { class: "scale", x1: gutter, x2: width - 24, y1: y, y2: y }));
        }
        svg.append(
          h(
            "svg:text",
            { class: "scale-label", x: gutter - 6, y: y + 3, "text-anchor": "end" },
            text,
          ),
        );
      }
      for (const name of ["arousal", "valence"]) {
        const points = mine
          .filter((u) => u[name] !== null)
          .map((u) => [x((u.start + u.end) / 2), middle - u[name] * 22]);
        if (!points.length) continue;
        svg.append(
          h("svg:polyline", {
            class: `line ${name}`,
            points: points.map((p) => p.join(",")).join(" "),
          }),
        );
        for (const [px, py] of points) {
          svg.append(h("svg:circle", { class: `dot ${name}`, cx: px, cy: py, r: 3 }));
        }
      }
    }
  });
  const labels = [...new Set(utterances.map((u) => u.label).filter(Boolean))].sort();
  const legend = h(
    "div",
    { class: "legend" },
    labels.map((label) => h("span", { class: `chip ${labelClass(label)}` }, label)),
    withLines ? h("span", { class: "key arousal" }, "arousal") : null,
    withLines ? h("span", { class: "key valence" }, "valence") : null,
  );
  return h("div", { class: "timeline-box" }, svg, legend);
}

function renderSummary(call) {
  const summary = call.summary;
  const rows = (summary.channels ?? []).map((entry) => {
    const counts = entry.label_counts ?? {};
    const seconds = entry.label_seconds ?? {};
    const labels = Object.keys(counts)
      .sort((a, b) => counts[b] - counts[a])
      .map((label) =>
        h(
          "span",
          { class: `chip ${labelClass(label)}` },
          `${label} ${counts[label]} (${(seconds[label] ?? 0).toFixed(1)} s)`,
        ),
      );
    return h(
      "tr",
      {},
      h("td", {}, entry.name ?? call.channelName(entry.channel)),
      h("td", {}, String(entry.utterances ?? "")),
      h("td", {}, `${(entry.talk_seconds ?? 0).toFixed(1)} s`),
      h("td", {}, signed(entry.mean_arousal)),
      h("td", {}, signed(entry.mean_valence)),
      h("td", {}, labels),
    );
  });
  const seconds = (value) => (typeof value === "number" ? `${value.toFixed(1)} s` : "–");
  return h(
    "section",
    { class: "summary", "aria-label": "Summary" },
    h("h3", {}, "Summary"),
    h(
      "p",
      {},
      `Duration ${seconds(summary.duration_s)} · overlap ${seconds(summary.overlap_seconds)}` +
        ` · longest silence ${seconds(summary.longest_silence_s)}`,
    ),
    h(
      "table",
      {},
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["channel", "utterances", "talk", "arousal", "valence", "labels"].map((name) =>
            h("th", {}, name),
          ),
        ),
      ),
      h("tbody", {}, rows),
    ),
  );
}

// "voice neutral · words anger (negative)" when the words' label differs from the
// voice's (streamser.labels.voice_and_words).
function voiceAndWords(u) {
  if (!u.final || !u.words || u.words === u.label) return null;
  const said = `words ${u.words}${u.sentiment ? ` (${u.sentiment})` : ""}`;
  return h("span", { class: "words" }, `voice ${u.label} · ${said} `);
}

function renderTranscript(call) {
  const utterances = call.sortedUtterances();
  if (!utterances.length) return h("p", { class: "muted transcript" }, "No speech yet.");
  return h(
    "ol",
    { class: "transcript" },
    utterances.map((u) => {
      let text = u.transcript;
      if (!u.final) text = u.partialText ? `${u.partialText} …` : "…";
      else if (text === null) text = u.asr === "off" ? "(no transcription)" : "(no transcript)";
      else if (text === "") text = "(nothing recognised)";
      return h(
        "li",
        {
          class: `line ${labelClass(u.label)}${u.final ? "" : " partial"}`,
          "data-utterance-id": u.id,
          "data-channel": u.channel,
          "data-label": u.label ?? "",
          "data-final": u.final ? "true" : "false",
        },
        h("span", { class: "time" }, clock(u.start)),
        h("span", { class: "speaker" }, call.channelName(u.channel)),
        h("span", { class: `chip ${labelClass(u.label)}` }, u.label ?? "…"),
        h("span", { class: "text" }, voiceAndWords(u), text),
      );
    }),
  );
}

// -- wiring ----------------------------------------------------------------------

function render() {
  page.scheduled = false;
  if (page.followLatest) {
    const newest = store.list().find((c) => c.live) ?? store.list()[0];
    if (newest) page.selected = newest.streamId;
  }
  renderList();
  const call = store.calls.get(page.selected) ?? null;
  if (call !== page.drawnCall || (call && call.version !== page.drawnVersion)) {
    renderCall(call);
    page.drawnCall = call;
    page.drawnVersion = call ? call.version : -1;
  }
}

function schedule() {
  if (page.scheduled) return;
  page.scheduled = true;
  requestAnimationFrame(render);
}

function showState(state, detail) {
  const badge = document.getElementById("connection");
  badge.dataset.state = state;
  badge.textContent = STATE_TEXT[state] ?? state;
  const notice = document.getElementById("notice");
  if (state === "unauthorized") {
    notice.textContent =
      detail === "refused"
        ? "The server refused the token in this page's address (HTTP 401). " +
          "Open the dashboard with a valid one: /?token=<token>."
        : "This server requires a token (HTTP 401). " +
          "Open the dashboard as /?token=<token>.";
    notice.hidden = false;
  } else {
    notice.hidden = true;
  }
}

/** The token from ?token= (then taken out of the address, so it is not left in the
 * history, a bookmark or a screenshot; kept for this tab so a reload still works),
 * else the one this tab was given before. */
function pageToken(params) {
  const given = params.get("token");
  if (given === null) return sessionStorage.getItem(TOKEN_KEY);
  sessionStorage.setItem(TOKEN_KEY, given);
  params.delete("token");
  const rest = params.toString();
  history.replaceState(null, "", `${location.pathname}${rest ? `?${rest}` : ""}${location.hash}`);
  return given;
}

function main() {
  const params = new URLSearchParams(location.search);
  const wanted = /^#call=(.+)$/.exec(location.hash);
  if (wanted) {
    try {
      page.selected = decodeURIComponent(wanted[1]);
      page.followLatest = false;
    } catch {
      // a malformed link: follow the latest call instead
    }
  }
  const connection = new EventConnection({
    token: pageToken(params),
    onEvent: (event) => {
      if (store.apply(event)) schedule();
    },
    onState: showState,
    onRestart: () => {
      store.serverRestarted();
      schedule();
    },
  });
  document.body.dataset.ready = "true";
  connection.start();
}

main();
