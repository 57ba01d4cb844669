// cello.js: the browser side of a cello WebSocket route, with no dependencies.
//
//   import { connect } from "/cello.js";
//   const client = connect("/ws/rooms/lobby", { params: { nick: "ada" } });
//   client.on("message", ({ data, id, group }) => show(data));
//   client.send("say", { text: "hi" });                       // {"type", "data"}
//   const answer = await client.request("join", { room: "x" }); // {"type", "data", "ack"}
//
// What it does for the page:
// * JSON both ways: a text message that is JSON arrives parsed; `send` and `request`
//   send `{"type": ..., "data": ...}`.
// * Reconnects by itself when the connection drops (network, server restart, 1001, 1011,
//   1012, 1013, a 1008 for a client too slow), after a delay that doubles from
//   `backoff.initial` to `backoff.max` ms, with jitter (so a restarted server is not hit
//   by every page at once). It does not for 1000 (the app ended it), the codes that say
//   the client itself is wrong (1002, 1003, 1007, 1009, 1010) and the app's own 4000-4999,
//   nor after `close()`.
// * Resumes: broadcasts of a hub with a history arrive with an id (`join(...,
//   resumable=True)` on the server); the client keeps the last one (`position`) and
//   reconnects with `?since=<position>`, so it gets what it missed, once and in order.
//   A `gap` event says some of it is no longer kept.
// * Requests with an ack and a timeout: `await client.request(type, data)` resolves with
//   the `data` of the server's `{"ack": n, "data": ...}` (cello's `ack(message, data)`),
//   or rejects with its `error`, on timeout, or when the connection drops first (it may
//   or may not have been handled: the app decides whether to ask again).
// * Messages sent while disconnected wait (up to `maxQueued`) and go out, in order, once
//   connected again.
//
// Events (`client.on(name, fn)`, `client.off(name, fn)`):
//   open     {resumed}              connected (again); `resumed`: with a position
//   joined   {group, at}            the hub's notice: the position to resume from
//   message  {data, id, group}      a message (`id`, `group`: from the hub's history)
//   gap      {group}                what was missed is no longer all kept
//   presence {...}                  the hub's presence events, as sent
//   close    {code, reason, reconnect, delay}   closed; reconnecting after `delay` ms?
//   error    {error}                a handler of another event threw

const NO_RETRY = new Set([1000, 1002, 1003, 1007, 1009, 1010]);

function defaults(options) {
  return {
    params: {},
    backoff: { initial: 250, max: 10000 },
    requestTimeout: 10000,
    maxQueued: 1000,
    protocols: undefined,
    ...options,
  };
}

function absolute(url) {
  const resolved = new URL(url, window.location.href);
  if (resolved.protocol === "http:") resolved.protocol = "ws:";
  if (resolved.protocol === "https:") resolved.protocol = "wss:";
  return resolved;
}

function fromBase64(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

export class CelloClient {
  constructor(url, options = {}) {
    this.url = absolute(url);
    this.options = defaults(options);
    this.position = this.options.since ?? null; // the last id or position from the hub
    this.socket = null;
    this.attempt = 0;
    this.closed = false;
    this._handlers = new Map();
    this._queued = [];
    this._pending = new Map(); // ack number -> {resolve, reject, timer}
    this._acks = 0;
    this._timer = null;
    this._open();
  }

  get connected() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  on(name, handler) {
    if (!this._handlers.has(name)) this._handlers.set(name, new Set());
    this._handlers.get(name).add(handler);
    return this;
  }

  off(name, handler) {
    this._handlers.get(name)?.delete(handler);
    return this;
  }

  send(type, data) {
    this._send({ type, data });
  }

  request(type, data, { timeout = this.options.requestTimeout } = {}) {
    const ack = ++this._acks;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(ack);
        reject(new Error(`no answer to ${type} within ${timeout} ms`));
      }, timeout);
      this._pending.set(ack, { resolve, reject, timer, sent: false });
      this._send({ type, data, ack });
    });
  }

  close(code = 1000, reason = "") {
    this.closed = true;
    clearTimeout(this._timer);
    this._failPending("the client was closed");
    if (this.socket !== null) this.socket.close(code, reason);
  }

  // ------------------------------------------------------------------ inside

  _emit(name, detail) {
    for (const handler of this._handlers.get(name) ?? []) {
      try {
        handler(detail);
      } catch (error) {
        if (name !== "error") this._emit("error", { error });
        else console.error(error);
      }
    }
  }

  _address() {
    const url = new URL(this.url);
    for (const [key, value] of Object.entries(this.options.params)) {
      url.searchParams.set(key, value);
    }
    if (this.position !== null) url.searchParams.set("since", this.position);
    return url.toString();
  }

  _open() {
    const socket = new WebSocket(this._address(), this.options.protocols);
    this.socket = socket;
    const resumed = this.position !== null;
    socket.onopen = () => {
      this.attempt = 0;
      this._emit("open", { resumed });
      const queued = this._queued;
      this._queued = [];
      for (const message of queued) this._transmit(message);
    };
    socket.onmessage = (event) => this._received(event.data);
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      this._failPending("the connection was lost before the answer");
      const code = event.code;
      const reconnect =
        !this.closed && !NO_RETRY.has(code) && !(code >= 4000 && code <= 4999);
      const delay = reconnect ? this._delay() : null;
      this._emit("close", { code, reason: event.reason, reconnect, delay });
      if (reconnect) this._timer = setTimeout(() => this._open(), delay);
    };
  }

  _delay() {
    const { initial, max } = this.options.backoff;
    const ceiling = Math.min(max, initial * 2 ** this.attempt);
    this.attempt += 1;
    return Math.round(ceiling / 2 + Math.random() * (ceiling / 2));
  }

  _send(message) {
    if (this.closed) throw new Error("the client is closed");
    if (this.connected) {
      this._transmit(message);
    } else if (this._queued.length < this.options.maxQueued) {
      this._queued.push(message);
    } else {
      throw new Error(`more than ${this.options.maxQueued} messages wait for a connection`);
    }
  }

  _transmit(message) {
    if (message.ack !== undefined) {
      const pending = this._pending.get(message.ack);
      if (pending === undefined) return; // it timed out while queued
      pending.sent = true;
    }
    this.socket.send(JSON.stringify(message));
  }

  _failPending(why) {
    for (const [ack, pending] of this._pending) {
      if (!pending.sent && !this.closed) continue; // still queued: it goes out later
      clearTimeout(pending.timer);
      this._pending.delete(ack);
      pending.reject(new Error(why));
    }
  }

  _received(raw) {
    if (typeof raw !== "string") {
      this._emit("message", { data: raw, id: null, group: null });
      return;
    }
    let value = raw;
    if (raw.startsWith("{") || raw.startsWith("[")) {
      try {
        value = JSON.parse(raw);
      } catch {
        value = raw;
      }
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      this._emit("message", { data: value, id: null, group: null });
      return;
    }
    if (typeof value.hub === "string") {
      if (value.hub === "joined") {
        this.position = value.at;
        this._emit("joined", { group: value.group, at: value.at });
      } else if (value.hub === "gap") {
        this._emit("gap", { group: value.group });
      }
      return;
    }
    if (typeof value.id === "string" && ("data" in value || "binary" in value)) {
      this.position = value.id;
      const data = "binary" in value ? fromBase64(value.binary) : value.data;
      this._emit("message", { data, id: value.id, group: value.group });
      return;
    }
    if (typeof value.ack === "number" && Object.keys(value).every((k) => ["ack", "data", "error"].includes(k))) {
      const pending = this._pending.get(value.ack);
      if (pending !== undefined) {
        this._pending.delete(value.ack);
        clearTimeout(pending.timer);
        if ("error" in value) pending.reject(new Error(String(value.error)));
        else pending.resolve(value.data);
      }
      return;
    }
    if (typeof value.presence === "string") {
      this._emit("presence", value);
      return;
    }
    this._emit("message", { data: value, id: null, group: null });
  }
}

export function connect(url, options) {
  return new CelloClient(url, options);
}
