// The console's one websocket (docs/console-protocol.md): connect with the token, resume
// with after=SEQ, reconnect with a bounded backoff, stop on an auth refusal.
//
// Why the rules below: a dispatcher leaves the page open all day across network blips and
// server restarts, so a dropped connection is normal and must heal by itself without losing
// an alert (the server replays everything after SEQ, or sends resync + snapshot); but a
// refused token will never start working, so retrying it would only hammer the server.

export const CLOSE_UNAUTHORIZED = 4401;
export const CLOSE_FORBIDDEN = 4403;
export const CLOSE_TOO_SLOW = 4408;

/** Reconnect delays in ms: quick first retry, then doubling, capped. */
export const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];

export class Connection {
  /**
   * @param {object} o
   * @param {string} o.url       ws(s)://host/ws/console (without query)
   * @param {string} o.token
   * @param {() => (number|null)} o.lastSeq   what to resume after
   * @param {(msg: object) => void} o.onMessage
   * @param {(state: string, info: object) => void} o.onState
   *        "connecting" | "open" | "reconnecting" | "unauthorized" | "forbidden" | "closed"
   * @param {number} [o.pingEveryMs]  application ping, so a dead link is noticed
   * @param {number} [o.staleAfterMs] no frame at all for this long: reconnect
   */
  constructor({ url, token, lastSeq, onMessage, onState, pingEveryMs = 15000, staleAfterMs = 45000 }) {
    Object.assign(this, { url, token, lastSeq, onMessage, onState, pingEveryMs, staleAfterMs });
    this.ws = null;
    this.attempt = 0;
    this.retryTimer = null;
    this.pingTimer = null;
    this.lastFrameAt = 0;
    this.stopped = false;
    this.nextId = 1;
    this.idPrefix = Math.random().toString(36).slice(2, 8);
  }

  /** A fresh client command id (unique within this page load). */
  commandId() {
    return `${this.idPrefix}-${this.nextId++}`;
  }

  open() {
    this.stopped = false;
    clearTimeout(this.retryTimer);
    const q = new URLSearchParams({ token: this.token });
    const after = this.lastSeq();
    if (after !== null && after !== undefined) q.set("after", String(after));
    this.onState("connecting", {});
    const ws = new WebSocket(`${this.url}?${q}`);
    this.ws = ws;
    ws.onopen = () => {
      this.lastFrameAt = performance.now();
      this.pingTimer = setInterval(() => this.keepAlive(), Math.min(this.pingEveryMs, this.staleAfterMs / 2));
    };
    ws.onmessage = (ev) => {
      this.lastFrameAt = performance.now();
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (err) {
        console.error("fleetwatch: a frame that is not JSON", err);
        return;
      }
      if (msg.type === "hello") {
        this.attempt = 0; // a working connection: the next drop retries quickly again
        this.onState("open", { hello: msg });
      }
      this.onMessage(msg, ev);
    };
    ws.onclose = (ev) => this.closed(ws, ev);
  }

  closed(ws, ev) {
    if (ws !== this.ws) return;
    clearInterval(this.pingTimer);
    this.ws = null;
    if (this.stopped) {
      this.onState("closed", { code: ev.code, reason: ev.reason });
      return;
    }
    if (ev.code === CLOSE_UNAUTHORIZED) {
      this.onState("unauthorized", { code: ev.code, reason: ev.reason });
      return;
    }
    if (ev.code === CLOSE_FORBIDDEN) {
      this.onState("forbidden", { code: ev.code, reason: ev.reason });
      return;
    }
    const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt += 1;
    this.onState("reconnecting", { code: ev.code, reason: ev.reason, delayMs: delay });
    this.retryTimer = setTimeout(() => this.open(), delay);
  }

  keepAlive() {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    if (performance.now() - this.lastFrameAt > this.staleAfterMs) {
      this.ws.close(4000, "no frame from the server: reconnecting");
      return;
    }
    this.send({ type: "ping", id: this.commandId() });
  }

  /** Send one command; false when not connected (the caller tells the dispatcher). */
  send(obj) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  }

  get isOpen() {
    return Boolean(this.ws && this.ws.readyState === WebSocket.OPEN);
  }

  close() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.pingTimer);
    if (this.ws) this.ws.close(1000, "page closed");
  }
}
