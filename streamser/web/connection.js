// The dashboard's subscription to /v1/events (PROTOCOL.md): replays the retained
// events on first load (after=0), resumes after a drop with after=<last id seen> so
// nothing is missed, and tells a refused token (HTTP 401) from a server that is down.

const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 10000;
const RESUME_REASON = /after=(\d+)/;

/**
 * One logical subscription over as many WebSockets as it takes.
 *
 * States passed to onState: "connecting", "live", "reconnecting",
 * "unauthorized" (401: no retry, the page needs a token) and "unavailable"
 * (503: the server is shutting down; retried).
 */
export class EventConnection {
  /**
   * @param {{token: string | null, onEvent: (event: object) => void,
   *          onState: (state: string, detail?: string) => void,
   *          onRestart: () => void}} options
   */
  constructor({ token, onEvent, onState, onRestart }) {
    this.token = token;
    this.onEvent = onEvent;
    this.onState = onState;
    this.onRestart = onRestart;
    this.lastId = 0; // the highest event id handed to onEvent
    this.resumeAfter = 0; // what the next connection asks for
    this.delayMs = FIRST_DELAY_MS;
    this.socket = null;
    this.timer = null;
  }

  /** The /v1/events URL beside this page (same host, port and path prefix). */
  url(scheme) {
    const url = new URL("v1/events", location.href);
    const query = new URLSearchParams({ after: String(this.resumeAfter) });
    if (this.token) query.set("token", this.token);
    url.protocol = scheme;
    url.search = query.toString();
    url.hash = "";
    return url.toString();
  }

  start() {
    this.onState("connecting");
    this.open();
  }

  open() {
    this.timer = null;
    const secure = location.protocol === "https:";
    const socket = new WebSocket(this.url(secure ? "wss:" : "ws:"));
    const askedAfter = this.resumeAfter;
    let opened = false;
    this.socket = socket;
    socket.addEventListener("open", () => {
      opened = true;
      this.delayMs = FIRST_DELAY_MS;
      this.onState("live");
    });
    socket.addEventListener("message", (message) => {
      if (socket === this.socket) this.receive(message.data, askedAfter);
    });
    socket.addEventListener("close", (close) => {
      if (socket === this.socket) this.socket = null;
      this.closed(close.code, close.reason, opened);
    });
  }

  receive(text, askedAfter) {
    let event;
    try {
      event = JSON.parse(text);
    } catch {
      return; // not an event; the protocol never sends one
    }
    if (typeof event !== "object" || event === null || !Number.isInteger(event.id)) {
      return;
    }
    if (event.id <= askedAfter) {
      // This socket asked for ids above askedAfter, and one server's ids only
      // grow: the server restarted and counts from 1 again. Start over from its
      // first retained event. (A restarted server that already passed
      // askedAfter before the page reconnected is not detected.)
      this.lastId = 0;
      this.resumeAfter = 0;
      const socket = this.socket;
      this.socket = null;
      socket.close();
      this.onRestart();
      return;
    }
    // A resume may replay events this page already has: ids increase strictly.
    if (event.id <= this.lastId) return;
    this.lastId = event.id;
    this.resumeAfter = event.id;
    this.onEvent(event);
  }

  async closed(code, reason, opened) {
    let delayMs = this.delayMs;
    let state = "reconnecting";
    if (code === 1013) {
      // Evicted for falling behind: the reason names the last event sent.
      const match = RESUME_REASON.exec(reason);
      if (match) this.resumeAfter = Math.min(Number(match[1]), this.lastId);
      delayMs = 250;
    } else if (!opened) {
      // The handshake was refused or the server is down; a browser's WebSocket
      // does not expose the HTTP status, so ask the same URL over plain HTTP.
      const status = await this.probe();
      if (status === 401) {
        this.onState("unauthorized", this.token ? "refused" : "missing");
        return;
      }
      if (status === 503) state = "unavailable";
      this.delayMs = Math.min(this.delayMs * 2, MAX_DELAY_MS);
    }
    this.onState(state);
    const jitter = 0.8 + 0.4 * Math.random();
    this.timer = setTimeout(() => this.open(), delayMs * jitter);
  }

  /** The HTTP status /v1/events answers without an upgrade, or 0 if unreachable. */
  async probe() {
    try {
      const secure = location.protocol === "https:";
      const response = await fetch(this.url(secure ? "https:" : "http:"), {
        cache: "no-store",
      });
      return response.status;
    } catch {
      return 0;
    }
  }
}
