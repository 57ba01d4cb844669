// The chat page: join a room with a nickname, show its messages and members. The
// connection is cello's browser client (`/cello.js`): it reconnects with growing delays
// whenever the socket drops, and stops for the app's own close codes (4000-4999).
import { connect } from "../cello.js";

const REFUSED = 4000;   // the server refused the room or nickname: ask again
const REPLACED = 4001;  // a newer connection of this page took over: stay quiet

const $ = (id) => document.getElementById(id);
const room = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "lobby");
// One id per tab, so a reconnect of this tab may take its own nickname back at once.
// (getRandomValues, not randomUUID: that one exists only on https and localhost pages.)
const client = sessionStorage.getItem("chat-client")
  || Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, "0")).join("");
sessionStorage.setItem("chat-client", client);

let nick = new URLSearchParams(location.search).get("nick") || sessionStorage.getItem("chat-nick");
if (nick) sessionStorage.setItem("chat-nick", nick);
let attempts = 0;   // failed connections since the last welcome
let joinedOnce = false;
const members = new Set();  // the welcome's list, kept up to date by the notices

function setState(state, text) {
  document.body.dataset.state = state;
  $("status").textContent = text;
  const online = state === "connected";
  $("text").disabled = !online;
  $("composer").querySelector("button").disabled = !online;
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
}

function addLine(kind, parts) {
  const item = document.createElement("li");
  item.className = kind;
  for (const [cls, text] of parts) {
    const span = document.createElement("span");
    span.className = cls;
    span.textContent = text;   // never innerHTML: messages are other people's text
    item.append(span);
  }
  const log = $("log");
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  log.append(item);
  if (atBottom) log.scrollTop = log.scrollHeight;
}

function notice(text) {
  addLine("notice", [["text", text]]);
}

function showMembers() {
  const names = [...members].sort();
  $("count").textContent = String(names.length);
  $("members").replaceChildren(...names.map((name) => {
    const item = document.createElement("li");
    item.textContent = name;
    if (name === nick) item.className = "me";
    return item;
  }));
}

function receive(data) {
  switch (data.type) {
    case "welcome":
      attempts = 0;
      setState("connected", `connected as ${data.nick}`);
      notice(joinedOnce ? "Reconnected." : `You joined #${data.room} as ${data.nick}.`);
      joinedOnce = true;
      members.clear();
      data.members.forEach((name) => members.add(name));
      showMembers();
      $("text").focus();
      break;
    case "joined":
      notice(`${data.nick} joined.`);
      members.add(data.nick);
      showMembers();
      break;
    case "left":
      notice(`${data.nick} left.`);
      members.delete(data.nick);
      showMembers();
      break;
    case "message":
      addLine(data.nick === nick ? "message mine" : "message", [
        ["time", clock(data.time)],
        ["nick", data.nick],
        ["text", data.text],
      ]);
      break;
    case "error":
      addLine("error", [["text", data.error]]);
      break;
  }
}

let chat = null;     // the cello.js client: it reconnects by itself, with backoff and jitter

function connectChat() {
  setState("connecting", "connecting…");
  chat = connect(`../ws/rooms/${encodeURIComponent(room)}`, {
    params: { nick, client },
    backoff: { initial: 500, max: 8000 },
  });
  chat.on("message", ({ data }) => receive(data));
  chat.on("close", ({ code, reason, reconnect, delay }) => {
    if (code === REFUSED) {           // 4000-4999: cello.js does not reconnect
      setState("offline", "not joined");
      askForNick(reason || "That nickname cannot join.");
    } else if (code === REPLACED) {
      setState("offline", "opened in another tab");
      notice("This chat continues in another tab.");
    } else if (reconnect) {
      attempts += 1;
      if (attempts === 1 && joinedOnce) notice("Connection lost; reconnecting…");
      setState("reconnecting", `reconnecting in ${(delay / 1000).toFixed(1)} s…`);
    } else {
      setState("offline", `disconnected (${code})`);
    }
  });
}

function askForNick(error) {
  $("join-error").textContent = error || "";
  $("nick").value = nick || "";
  $("join").hidden = false;
  $("nick").focus();
}

$("join-form").addEventListener("submit", (event) => {
  event.preventDefault();
  nick = $("nick").value.trim();
  sessionStorage.setItem("chat-nick", nick);
  $("join").hidden = true;
  attempts = 0;
  connectChat();
});

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("text").value;
  if (!text.trim() || chat === null || !chat.connected) return;
  chat.send("message", { text });
  $("text").value = "";
});

$("room-form").addEventListener("submit", (event) => {
  event.preventDefault();
  location.href = new URL(`../rooms/${encodeURIComponent($("room-input").value.trim())}`, location.href);
});

$("room-name").textContent = room;
$("join-room").textContent = room;
document.title = `#${room} · cello chat`;
if (nick) connectChat(); else askForNick();
