// The chat page: one WebSocket to the adapter, speaking chatnet's JSON mode.
// Server frames are Message-shaped; notices carry metadata.event.
//
// What the network agrees on (the notice names, the login refusals, the name rule, the
// limits) comes from /config.json, loaded before the first connection, and is never
// retyped here.
//
// Logging in: a password goes to the adapter once (POST /api/login or /api/register)
// and is forgotten; the adapter keeps the account's session token in an HttpOnly cookie
// this script can't read, and the WebSocket's login frame carries the name only. So a
// reload or a second tab resumes the account (GET /api/session says whose) without the
// password, and "Leave" (POST /api/logout) ends it. A guest types a name only; the name
// (no secret) is remembered to fill in the form next time.
//
// Names are one identity in any case: people and conversations are keyed by
// `key(name)` and shown as the server spells them.
//
// Acknowledged delivery: the chat server counts a message as delivered only once the
// page says it has it. Every chat and subscription frame, once rendered into its pane
// (or recognised by its id as one already shown, and dropped), has its id queued, and
// the queue goes out as `{"type": "ack", "ids": [...]}` a moment later. A page that
// closes first simply hasn't acknowledged: that mail comes again at the next login,
// and ids keep a repeat from being shown twice.

import { renderMarkdown } from "./markdown.js";

const LOBBY = "*lobby*"; // not a valid user name, so it never clashes with a peer
const FIRST_RETRY_MS = 1000;
const MAX_RETRY_MS = 30000;
// How long shown messages wait for others to share their ack frame. A timer, not an
// animation frame: a background tab gets none, and its mail would stay unacknowledged.
const ACK_DELAY_MS = 50;

const $ = (id) => document.getElementById(id);

const key = (name) => String(name).toLowerCase();
const sameName = (a, b) => a != null && b != null && key(a) === key(b);

const state = {
  me: null, // as the server spells it, once welcomed
  account: false, // logged in (or resuming) with the account's session cookie
  mode: "login", // the login form: "login" or "register"
  config: null, // /config.json, once loaded
  nameRe: null, // the name rule as a RegExp, from the config
  ws: null,
  session: null,
  wanted: false, // the person wants to be connected (false after Leave)
  welcomed: false, // a login succeeded at least once in this page
  retryMs: FIRST_RETRY_MS,
  retryTimer: null,
  online: new Map(), // key -> name, who is online now
  bots: new Set(), // keys of everyone the server has said is a bot (presence, welcome, who)
  conversations: new Map(), // key -> conversation
  active: LOBBY, // the key of the open conversation
  acks: [], // ids shown (or dropped as repeats), not acknowledged yet
  ackTimer: null,
};

// --- conversations ------------------------------------------------------------------

// The conversation with `name`; `spelling`: the name as the server wrote it, which wins.
function conversation(name, spelling = null) {
  const k = key(name);
  let conv = state.conversations.get(k);
  if (!conv) {
    const pane = document.createElement("div");
    pane.className = "messages";
    pane.setAttribute("role", "log");
    pane.hidden = true;
    $("panes").append(pane);
    conv = { key: k, name, pane, ids: new Set(), unread: 0, streams: new Map(), history: "none", nextBefore: null };
    state.conversations.set(k, conv);
  }
  if (spelling && spelling !== conv.name && k !== LOBBY) {
    conv.name = spelling;
    if (state.active === k) $("pane-title").textContent = spelling;
  }
  conv.pane.dataset.peer = conv.name;
  return conv;
}

function openConversation(name) {
  const conv = conversation(name);
  state.active = conv.key;
  for (const other of state.conversations.values()) other.pane.hidden = other !== conv;
  conv.unread = 0;
  const isPeer = conv.key !== LOBBY;
  name = conv.name;
  $("pane-title").textContent = isPeer ? name : "Lobby";
  $("text").disabled = !isPeer;
  $("send").disabled = !isPeer;
  $("text").placeholder = isPeer ? `Message ${name}` : "Pick someone to chat with";
  $("text").title = isPeer ? "Enter sends, Shift+Enter starts a new line" : "";
  updatePresence();
  renderPeople();
  document.body.classList.remove("drawer-open");
  if (isPeer && conv.history === "none") loadHistory(conv);
  scrollToEnd(conv, true);
  if (isPeer) $("text").focus();
}

function updatePresence() {
  const k = state.active;
  $("pane-presence").textContent = k === LOBBY ? "" : state.online.has(k) ? "online" : "offline — messages are kept for later";
}

function nearEnd(pane) {
  return pane.scrollHeight - pane.scrollTop - pane.clientHeight < 80;
}

function scrollToEnd(conv, force = false) {
  if (force || nearEnd(conv.pane)) conv.pane.scrollTop = conv.pane.scrollHeight;
}

function append(conv, element, { countUnread = true } = {}) {
  const stick = nearEnd(conv.pane);
  conv.pane.append(element);
  if (stick) conv.pane.scrollTop = conv.pane.scrollHeight;
  if (countUnread && conv.key !== state.active) {
    conv.unread += 1;
    renderPeople();
  }
}

// --- rendering messages -------------------------------------------------------------

// Bots are told apart by what the server says (metadata.bot of presence, the welcome's
// and !who's bots lists), not by the names in /config.json.
function isBot(name) {
  return name != null && state.bots.has(key(name));
}

function markBots(names) {
  for (const name of names || []) state.bots.add(key(name));
}

function clock(timestamp) {
  const date = new Date(timestamp);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function timeElement(timestamp) {
  const time = document.createElement("time");
  time.dateTime = timestamp;
  time.title = timestamp;
  time.textContent = clock(timestamp);
  return time;
}

function setBody(body, msg) {
  // Bot replies are Markdown (escaped first); people's messages are plain text.
  if (isBot(msg.sender) || msg.metadata?.stream) {
    body.classList.add("markdown");
    body.innerHTML = renderMarkdown(msg.message);
  } else {
    body.textContent = msg.message;
  }
}

function readingElement(msg) {
  const meta = msg.metadata || {};
  const row = document.createElement("div");
  row.className = "msg reading";
  row.dataset.id = msg.id;
  const value = document.createElement("span");
  value.className = "reading-value";
  const number = Number(meta.value);
  value.textContent = `${Number.isFinite(number) ? number.toFixed(1) : meta.value} ${meta.unit ?? ""}`.trim();
  const label = document.createElement("span");
  label.className = "reading-label";
  label.textContent = `${msg.sender}${meta.stored ? " · while you were away" : ""}`;
  row.append(value, label, timeElement(msg.timestamp));
  return row;
}

function messageElement(msg) {
  if (msg.type === "subscription" && msg.metadata && "value" in msg.metadata) return readingElement(msg);
  const mine = sameName(msg.sender, state.me);
  const row = document.createElement("div");
  row.className = `msg ${mine ? "mine" : "theirs"}`;
  if (msg.id) row.dataset.id = msg.id;
  const meta = document.createElement("div");
  meta.className = "meta";
  const who = document.createElement("span");
  who.className = "sender";
  who.textContent = msg.sender ?? "";
  meta.append(who, timeElement(msg.timestamp));
  if (msg.metadata?.stored) {
    const tag = document.createElement("span");
    tag.className = "tag";
    tag.textContent = "stored";
    meta.append(tag);
  }
  const body = document.createElement("div");
  body.className = "body";
  setBody(body, msg);
  row.append(meta, body);
  return row;
}

function systemLine(conv, text, kind = "info") {
  const line = document.createElement("div");
  line.className = `system ${kind}`;
  line.textContent = text;
  append(conv, line, { countUnread: false });
  return line;
}

// A person's or bot's message to or from this user.
function showMessage(msg) {
  const mine = sameName(msg.sender, state.me);
  const peer = mine ? msg.destination : msg.sender;
  if (!peer) return;
  const conv = conversation(peer, mine ? null : msg.sender);
  if (msg.id && conv.ids.has(msg.id)) return; // a repeat (mail handed over again): shown already
  const stream = msg.metadata?.stream;
  if (stream?.id && showStreamPart(conv, msg, stream)) {
    if (msg.id) conv.ids.add(msg.id);
    return;
  }
  if (msg.id) conv.ids.add(msg.id);
  if (msg.type === "subscription" && sameName(peer, state.config.thermometer)) showLatestReading(msg);
  append(conv, messageElement(msg));
}

// Streamed replies grow in place; the final frame replaces the text. True when handled.
function showStreamPart(conv, msg, stream) {
  let entry = conv.streams.get(stream.id);
  if (stream.done) {
    if (!entry) return false; // a whole reply (e.g. stored mail): show it as one message
    entry.text = msg.message;
    entry.row.classList.remove("streaming");
    entry.row.dataset.id = msg.id;
    conv.ids.add(msg.id);
    setBody(entry.body, msg);
    conv.streams.delete(stream.id);
    scrollToEnd(conv);
    return true;
  }
  if (!entry) {
    const row = messageElement({ ...msg, message: "" });
    row.classList.add("streaming");
    entry = { row, body: row.querySelector(".body"), text: "" };
    conv.streams.set(stream.id, entry);
    append(conv, row);
  }
  entry.text += msg.message;
  setBody(entry.body, { ...msg, message: entry.text });
  scrollToEnd(conv);
  return true;
}

// --- acknowledgements -------------------------------------------------------------

// `msg` is on screen (or was, or can't ever be): the page will do nothing more with it.
function acknowledge(msg) {
  if (typeof msg.id !== "string" || !msg.id) return;
  state.acks.push(msg.id);
  state.ackTimer ??= setTimeout(sendAcks, ACK_DELAY_MS);
}

function sendAcks() {
  state.ackTimer = null;
  const ids = state.acks;
  state.acks = [];
  const ws = state.ws;
  // Without a socket there is no one to tell: that mail comes again, and is acked as a repeat.
  if (!ws || ws.readyState !== WebSocket.OPEN) return;
  const per = state.config.ack_ids_per_frame; // so that a frame fits one line to the chat server
  for (let i = 0; i < ids.length; i += per) ws.send(JSON.stringify({ type: "ack", ids: ids.slice(i, i + per) }));
}

function showLatestReading(msg) {
  const meta = msg.metadata || {};
  const number = Number(meta.value);
  const value = Number.isFinite(number) ? number.toFixed(1) : meta.value;
  $("thermo-latest").textContent = `${value} ${meta.unit ?? ""} at ${clock(msg.timestamp)}`;
}

// --- people list --------------------------------------------------------------------

function displayName(k) {
  return state.conversations.get(k)?.name ?? state.online.get(k) ?? k;
}

function renderPeople() {
  const keys = new Set([...state.online.keys(), ...state.conversations.keys()]);
  keys.delete(LOBBY);
  if (state.me) keys.delete(key(state.me));
  const sorted = [...keys].sort((a, b) => {
    const online = Number(state.online.has(b)) - Number(state.online.has(a));
    return online || displayName(a).localeCompare(displayName(b));
  });
  const list = $("people");
  list.replaceChildren(lobbyItem(), ...sorted.map(personItem));
  // On a phone the list hides behind the menu button: it shows the unread total.
  const unread = [...state.conversations.values()].reduce((sum, conv) => sum + conv.unread, 0);
  $("menu").dataset.unread = unread ? String(unread) : "";
  const others = [...state.online.keys()].filter((k) => !state.me || k !== key(state.me));
  $("online-count").textContent = `(${others.length} online)`;
}

function lobbyItem() {
  const item = document.createElement("li");
  item.className = `person lobby${state.active === LOBBY ? " active" : ""}`;
  item.dataset.peer = LOBBY;
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = "Lobby";
  button.addEventListener("click", () => openConversation(LOBBY));
  item.append(button);
  return item;
}

function personItem(k) {
  const conv = state.conversations.get(k);
  const name = displayName(k);
  const item = document.createElement("li");
  item.className = `person${state.online.has(k) ? " online" : ""}${state.active === k ? " active" : ""}`;
  item.dataset.peer = name;
  const button = document.createElement("button");
  button.type = "button";
  const dot = document.createElement("span");
  dot.className = "dot";
  dot.title = state.online.has(k) ? "online" : "offline";
  const label = document.createElement("span");
  label.className = "name";
  label.textContent = name;
  button.append(dot, label);
  if (isBot(name)) {
    item.classList.add("bot");
    const tag = document.createElement("span");
    tag.className = "tag";
    tag.textContent = "bot";
    button.append(tag);
  }
  if (conv?.unread) {
    const badge = document.createElement("span");
    badge.className = "unread";
    badge.textContent = String(conv.unread);
    badge.setAttribute("aria-label", `${conv.unread} unread`);
    button.append(badge);
  }
  button.addEventListener("click", () => openConversation(name));
  item.append(button);
  return item;
}

function setOnline(names) {
  state.online = new Map(names.map((name) => [key(name), name]));
  renderPeople();
  updatePresence();
}

// --- history ------------------------------------------------------------------------

async function loadHistory(conv) {
  if (!state.session || conv.history === "loading") return;
  conv.history = "loading";
  const params = new URLSearchParams({ limit: String(state.config.history_page) });
  if (conv.nextBefore) params.set("before", conv.nextBefore);
  try {
    const response = await fetch(`/api/history/${encodeURIComponent(conv.name)}?${params}`, {
      headers: { "X-Chatnet-Session": state.session },
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    conv.nextBefore = body.next_before;
    insertHistory(conv, body.messages.slice().reverse());
    conv.history = "loaded";
  } catch (error) {
    conv.history = "none";
    systemLine(conv, `History unavailable: ${error.message}`, "error");
  }
}

// Older messages go above what is on screen, oldest first, without duplicates.
function insertHistory(conv, messages) {
  conv.pane.querySelector(".load-earlier")?.remove();
  const fragment = document.createDocumentFragment();
  for (const msg of messages) {
    if (conv.ids.has(msg.id) || isLocalEcho(conv, msg)) continue;
    conv.ids.add(msg.id);
    fragment.append(messageElement(msg));
  }
  const fromBottom = conv.pane.scrollHeight - conv.pane.scrollTop;
  conv.pane.prepend(fragment);
  addLoadEarlier(conv);
  conv.pane.scrollTop = conv.pane.scrollHeight - fromBottom;
}

function addLoadEarlier(conv) {
  if (!conv.nextBefore || conv.pane.querySelector(".load-earlier")) return;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "load-earlier";
  button.textContent = "Load earlier messages";
  button.addEventListener("click", () => loadHistory(conv));
  conv.pane.prepend(button);
}

// A message this page showed when it was sent (the server gives it its id later).
function isLocalEcho(conv, msg) {
  if (!sameName(msg.sender, state.me)) return false;
  for (const row of conv.pane.querySelectorAll(".msg.mine.local")) {
    if (row.querySelector(".body").textContent === msg.message) {
      row.classList.remove("local");
      row.dataset.id = msg.id;
      return true;
    }
  }
  return false;
}

// --- frames from the adapter --------------------------------------------------------

function handleFrame(msg) {
  const event = msg.metadata?.event;
  if (msg.type === "chat" || msg.type === "subscription") {
    showMessage(msg); // should rendering throw, the message is not acknowledged
    return acknowledge(msg);
  }
  const E = state.config.events; // chatnet.protocol.Event, by name
  switch (event) {
    case E.WELCOME:
      return onWelcome(msg);
    case E.SESSION:
      state.session = msg.metadata.token;
      return;
    case E.STATUS:
      return onStatus(msg);
    case E.PRESENCE:
      return onPresence(msg.metadata);
    case E.WHO:
      markBots(msg.metadata.bots);
      setOnline([...(msg.metadata.users || []), ...(msg.metadata.bots || [])]);
      return systemLine(activeConversation(), msg.message);
    case E.SAVED:
      return systemLine(conversation(msg.metadata.destination), msg.message, "saved");
    case E.NOT_SAVED:
    case E.NOT_SENT:
      return systemLine(conversation(msg.metadata.destination || state.active), msg.message, "error");
    case E.LOGIN_FAILED:
      return onLoginFailed(msg);
    case E.SHUTDOWN:
      return showBanner(msg.message || "The chat server is shutting down.");
    default:
      return systemLine(activeConversation(), msg.message, msg.type === "error" ? "error" : "info");
  }
}

function activeConversation() {
  return state.conversations.get(state.active) ?? conversation(LOBBY);
}

function onWelcome(msg) {
  const meta = msg.metadata || {};
  state.welcomed = true;
  state.retryMs = FIRST_RETRY_MS;
  state.me = meta.user || state.me;
  state.account = Boolean(meta.account);
  localStorage.setItem("chatnet.name", state.me);
  setConn("online", "online");
  hideBanner();
  showApp();
  markBots(meta.bots);
  setOnline([...(meta.online || []), ...(meta.bots || [])]);
  systemLine(conversation(LOBBY), msg.message);
}

function onStatus(msg) {
  const s = msg.metadata.state;
  if (s === "connected") {
    hideBanner();
    return;
  }
  setConn("trouble", s === "lost" ? "reconnecting…" : "chat server unavailable");
  showBanner(msg.message);
  if (s === "lost") setOnline([]);
}

function onPresence({ presence, user, bot }) {
  if (!user || sameName(user, state.me)) return;
  if (bot === true) state.bots.add(key(user));
  if (presence === "online") state.online.set(key(user), user);
  else state.online.delete(key(user));
  renderPeople();
  updatePresence();
  const conv = state.conversations.get(key(user));
  if (conv) systemLine(conv, `${user} is ${presence}.`, "presence");
}

function onLoginFailed(msg) {
  const { reason, retry_after: retryAfter } = msg.metadata || {};
  const R = state.config.login_reasons;
  if (state.welcomed && (reason === R.NAME_TAKEN || !reason)) {
    // Our previous connection may still be closing on the server: try again shortly.
    showBanner(`${msg.message} Retrying…`);
    state.ws?.close();
    return;
  }
  stop();
  setConn("offline", "offline");
  if (state.account && (reason === R.WRONG_PASSWORD || reason === R.PASSWORD_REQUIRED)) {
    // The cookie's session is no longer taken (left elsewhere, a new password, expired).
    endSession();
    showLogin("Your session has ended; log in again.");
    return;
  }
  showLogin(refusalText(reason, state.me, retryAfter, msg.message), reason === R.PASSWORD_REQUIRED ? "login-password" : "login-name");
}

// A refused login in plain words; `fallback` (the server's or adapter's own text) for
// a reason the page has no words of its own for.
function refusalText(reason, user, retryAfter, fallback) {
  const R = state.config?.login_reasons ?? {};
  if (!reason || !Object.values(R).includes(reason)) return fallback || "That login was refused.";
  switch (reason) {
    case R.WRONG_PASSWORD:
      return `Wrong password for '${user}'.`;
    case R.LOCKED:
      return `Too many failed logins for '${user}'; try again in ${retryAfter ?? "a few"} s.`;
    case R.PASSWORD_REQUIRED:
      return `'${user}' is an account: enter its password to log in.`;
    case R.NAME_TAKEN:
      return `Someone is online as '${user}' right now; choose another name.`;
    case R.RESERVED:
      return `The name '${user}' belongs to a bot; choose another.`;
    case R.GUESTS_NOT_ALLOWED:
      return "This network takes no guests: log in with your account, or create one.";
    case R.INVALID_NAME:
      return `Use ${state.config.name_rule}.`;
    case R.UNAVAILABLE:
      return "Accounts can't be checked right now; try again in a moment.";
    default:
      return fallback || "That login was refused.";
  }
}

// --- connection ---------------------------------------------------------------------

function connect() {
  clearTimeout(state.retryTimer);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/ws`);
  state.ws = ws;
  setConn("connecting", "connecting…");
  ws.addEventListener("open", () => {
    ws.send(JSON.stringify({ type: "login", user: state.me, features: ["stream", "ack"] }));
  });
  ws.addEventListener("message", (event) => {
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return;
    }
    handleFrame(frame);
  });
  ws.addEventListener("close", (event) => {
    if (state.ws !== ws) return;
    state.ws = null;
    state.session = null;
    if (event.code === state.config.signed_out_close) {
      // This browser left from another tab: the session is over here too.
      stop();
      state.account = false;
      setConn("offline", "offline");
      showLogin("You left from another tab; log in again.");
      return;
    }
    if (state.wanted) scheduleReconnect();
  });
}

function scheduleReconnect() {
  const delay = state.retryMs;
  state.retryMs = Math.min(state.retryMs * 2, MAX_RETRY_MS);
  const jittered = Math.round(delay * (0.8 + Math.random() * 0.4));
  setConn("offline", `disconnected — reconnecting in ${Math.ceil(jittered / 1000)} s`);
  setOnline([]);
  state.retryTimer = setTimeout(connect, jittered);
}

function stop() {
  state.wanted = false;
  clearTimeout(state.retryTimer);
  const ws = state.ws;
  state.ws = null;
  ws?.close();
}

function send(frame) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) {
    systemLine(activeConversation(), "Not connected — that was not sent.", "error");
    return false;
  }
  state.ws.send(JSON.stringify(frame));
  return true;
}

function sendChat(destination, text) {
  if (!send({ type: "chat", destination, message: text })) return;
  const msg = { id: null, sender: state.me, destination, message: text, timestamp: new Date().toISOString(), type: "chat", metadata: {} };
  const row = messageElement(msg);
  row.classList.add("local");
  append(conversation(destination), row, { countUnread: false });
}

function sendCommand(text) {
  send({ type: "command", message: text });
}

// --- screens and status -------------------------------------------------------------

function setConn(kind, text) {
  const conn = $("conn");
  conn.dataset.state = kind;
  conn.textContent = text;
}

function showBanner(text) {
  $("banner").textContent = text;
  $("banner").hidden = false;
}

function hideBanner() {
  $("banner").hidden = true;
}

function showLogin(error = "", focus = "login-name") {
  $("app").hidden = true;
  $("login").hidden = false;
  setBusy(false);
  $("login-error").textContent = error;
  $("login-error").hidden = !error;
  $(focus).focus();
}

function showApp() {
  $("login").hidden = true;
  $("app").hidden = false;
  $("me").textContent = state.me;
  $("me").title = state.account ? "logged in with your account" : "logged in as a guest";
  if (!state.conversations.has(LOBBY)) openConversation(LOBBY);
}

function setBusy(busy) {
  for (const id of ["login-submit", "login-guest", "login-switch"]) $(id).disabled = busy;
}

function setMode(mode) {
  state.mode = mode;
  const register = mode === "register";
  $("login-form").dataset.mode = mode;
  $("repeat-row").hidden = !register;
  $("login-repeat").disabled = !register;
  $("login-password").autocomplete = register ? "new-password" : "current-password";
  $("password-hint").textContent = register ? "(for your new account)" : "(if the name is your account)";
  $("login-submit").textContent = register ? "Create account" : "Log in";
  $("login-guest").hidden = register || state.config?.guests === false;
  $("login-switch").textContent = register ? "I have an account: log in" : "Create an account";
  $("login-error").hidden = true;
}

// --- wiring -------------------------------------------------------------------------

const UNREACHABLE = "The chat page can't reach its server right now; try again in a moment.";

// A POST of JSON to the adapter; its answer as {ok, body}. Throws when it can't be reached.
async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  let answer;
  try {
    answer = await response.json();
  } catch {
    answer = { error: response.statusText };
  }
  return { ok: response.ok, body: answer };
}

// `kind`: "login" (with a password; without one it is a guest's), "guest" or "register".
async function submitLogin(kind) {
  if (!(await loadConfig())) {
    showLogin(UNREACHABLE);
    return;
  }
  const R = state.config.login_reasons;
  const name = $("login-name").value.trim();
  const password = $("login-password").value;
  if (!state.nameRe.test(name)) {
    showLogin(`Use ${state.config.name_rule}.`);
    return;
  }
  if (kind === "login" && !password) kind = state.config.guests ? "guest" : "login";
  if (kind === "login" && !password) {
    showLogin(refusalText(R.GUESTS_NOT_ALLOWED, name), "login-password");
    return;
  }
  if (kind === "register" && password !== $("login-repeat").value) {
    showLogin("The two passwords differ: type the same one twice.", "login-repeat");
    return;
  }
  setBusy(true);
  let answer;
  try {
    const body = kind === "guest" ? { user: name, guest: true } : { user: name, password };
    answer = await post(kind === "register" ? "/api/register" : "/api/login", body);
  } catch {
    showLogin(UNREACHABLE);
    return;
  } finally {
    // The password went to the adapter once; nothing here keeps it.
    $("login-password").value = "";
    $("login-repeat").value = "";
  }
  if (!answer.ok) {
    const { error, reason, retry_after: retryAfter } = answer.body;
    const text = kind === "register" ? error : refusalText(reason, name, retryAfter, error);
    showLogin(text || "That login was refused.", reason === R.PASSWORD_REQUIRED || reason === R.WRONG_PASSWORD ? "login-password" : "login-name");
    return;
  }
  setMode("login");
  begin(answer.body.user, Boolean(answer.body.account));
}

// Connect as `name` (with the account's cookie when `account`).
function begin(name, account) {
  if (!sameName(state.me, name)) {
    for (const conv of state.conversations.values()) conv.pane.remove();
    state.conversations.clear();
    state.online.clear();
    state.active = LOBBY;
  }
  state.me = name;
  state.account = account;
  state.welcomed = false;
  state.wanted = true;
  state.retryMs = FIRST_RETRY_MS;
  localStorage.setItem("chatnet.name", name);
  $("login-error").hidden = true;
  connect();
}

// Ends this browser's account session (the adapter revokes it and clears the cookie).
function endSession() {
  state.account = false;
  return post("/api/logout", {}).catch(() => null);
}

async function leave() {
  stop();
  setConn("offline", "offline");
  setBusy(true);
  await endSession();
  showLogin();
}

function submitMessage(event) {
  event.preventDefault();
  const textarea = $("text");
  const text = textarea.value.trim();
  if (!text || state.active === LOBBY) return;
  if (text.length > state.config.max_message_chars) {
    systemLine(activeConversation(), `Too long: ${text.length} characters (the limit is ${state.config.max_message_chars}).`, "error");
    return;
  }
  sendChat(state.active, text);
  textarea.value = "";
  textarea.style.height = "";
}

function askBot(which, text) {
  // The panels' buttons talk to the bots the network is configured with.
  const name = which === "thermometer" ? state.config.thermometer : state.config.bot;
  openConversation(name);
  sendChat(conversation(name).name, text);
}

// The network's config, loaded once (again at the next login if it failed); true once it is here.
let configLoading = null;

function loadConfig() {
  configLoading ??= fetchConfig().then((loaded) => {
    if (!loaded) configLoading = null;
    return loaded;
  });
  return configLoading;
}

async function fetchConfig() {
  let config;
  try {
    const response = await fetch("/config.json");
    if (!response.ok) return false;
    config = await response.json();
  } catch {
    return false;
  }
  state.config = config;
  state.nameRe = new RegExp(config.name_pattern);
  for (const input of [$("login-name"), $("new-chat-name")]) {
    input.pattern = config.name_pattern.replace(/^\^|\$$/g, ""); // the attribute is anchored already
    input.title = config.name_rule;
    input.maxLength = config.max_name_chars;
  }
  if (Array.isArray(config.personalities) && config.personalities.length) {
    const select = $("personality-name");
    select.replaceChildren(...config.personalities.map((name) => new Option(name, name)));
  }
  $("thermo-name").textContent = config.thermometer;
  $("bot-name").textContent = config.bot;
  return true;
}

// Whose account session this browser holds (the cookie itself is out of this script's reach).
async function fetchSession() {
  try {
    const response = await fetch("/api/session", { credentials: "same-origin" });
    return response.ok ? (await response.json()).user : null;
  } catch {
    return null;
  }
}

function wire() {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    submitLogin(state.mode === "register" ? "register" : "login");
  });
  $("login-guest").addEventListener("click", () => submitLogin("guest"));
  $("login-switch").addEventListener("click", () => {
    if (state.mode === "login" && state.config?.registration === "closed") {
      showLogin("New accounts are made by this network's admin only (registration is closed).");
      return;
    }
    setMode(state.mode === "login" ? "register" : "login");
    $(state.mode === "register" ? "login-name" : "login-password").focus();
  });
  $("composer").addEventListener("submit", submitMessage);
  $("text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) submitMessage(event);
  });
  $("text").addEventListener("input", (event) => {
    const area = event.target;
    area.style.height = "";
    area.style.height = `${Math.min(area.scrollHeight, 160)}px`;
  });
  for (const button of document.querySelectorAll("[data-command]")) {
    button.addEventListener("click", () => sendCommand(button.dataset.command));
  }
  for (const button of document.querySelectorAll("[data-bot]")) {
    button.addEventListener("click", () => askBot(button.dataset.bot, button.dataset.text));
  }
  $("personality").addEventListener("submit", (event) => {
    event.preventDefault();
    askBot("assistant", `personality ${$("personality-name").value}`);
  });
  $("new-chat").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = $("new-chat-name").value.trim();
    if (!state.nameRe?.test(name)) return;
    $("new-chat-name").value = "";
    openConversation(name);
  });
  $("menu").addEventListener("click", () => document.body.classList.toggle("drawer-open"));
  $("logout").addEventListener("click", leave);
  $("login-name").value = localStorage.getItem("chatnet.name") || "";
}

// A browser that holds an account session resumes it at once; otherwise the login form.
async function boot() {
  wire();
  const [loaded, user] = await Promise.all([loadConfig(), fetchSession()]);
  if (!loaded) return;
  setMode("login");
  if (user) {
    begin(user, true);
    showApp();
  }
}

boot();
