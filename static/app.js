// The chat page: one WebSocket to the adapter, speaking chatnet's JSON mode.
// Server frames are Message-shaped; notices carry metadata.event.
//
// What the network agrees on (the notice names, the name rule, the limits) comes from
// /config.json, loaded before the first connection, and is never retyped here.

import { renderMarkdown } from "./markdown.js";

const LOBBY = "*lobby*"; // not a valid user name, so it never clashes with a peer
const FIRST_RETRY_MS = 1000;
const MAX_RETRY_MS = 30000;

const $ = (id) => document.getElementById(id);

const state = {
  me: null,
  config: null, // /config.json, once loaded
  nameRe: null, // the name rule as a RegExp, from the config
  ws: null,
  session: null,
  wanted: false, // the person wants to be connected (false after Leave)
  welcomed: false, // a login succeeded at least once in this page
  retryMs: FIRST_RETRY_MS,
  retryTimer: null,
  online: new Set(),
  conversations: new Map(),
  active: LOBBY,
};

// --- conversations ------------------------------------------------------------------

function conversation(name) {
  let conv = state.conversations.get(name);
  if (!conv) {
    const pane = document.createElement("div");
    pane.className = "messages";
    pane.dataset.peer = name;
    pane.setAttribute("role", "log");
    pane.hidden = true;
    $("panes").append(pane);
    conv = { name, pane, ids: new Set(), unread: 0, streams: new Map(), history: "none", nextBefore: null };
    state.conversations.set(name, conv);
  }
  return conv;
}

function openConversation(name) {
  state.active = name;
  for (const conv of state.conversations.values()) conv.pane.hidden = conv.name !== name;
  const conv = conversation(name);
  conv.pane.hidden = false;
  conv.unread = 0;
  const isPeer = name !== LOBBY;
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
  const name = state.active;
  $("pane-presence").textContent = name === LOBBY ? "" : state.online.has(name) ? "online" : "offline — messages are kept for later";
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
  if (countUnread && conv.name !== state.active) {
    conv.unread += 1;
    renderPeople();
  }
}

// --- rendering messages -------------------------------------------------------------

function isBot(name) {
  return name === state.config.bot || name === state.config.thermometer;
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
  const mine = msg.sender === state.me;
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
  const peer = msg.sender === state.me ? msg.destination : msg.sender;
  if (!peer) return;
  const conv = conversation(peer);
  const stream = msg.metadata?.stream;
  if (stream?.id && showStreamPart(conv, msg, stream)) return;
  if (msg.id && conv.ids.has(msg.id)) return;
  if (msg.id) conv.ids.add(msg.id);
  if (msg.type === "subscription" && peer === state.config.thermometer) showLatestReading(msg);
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

function showLatestReading(msg) {
  const meta = msg.metadata || {};
  const number = Number(meta.value);
  const value = Number.isFinite(number) ? number.toFixed(1) : meta.value;
  $("thermo-latest").textContent = `${value} ${meta.unit ?? ""} at ${clock(msg.timestamp)}`;
}

// --- people list --------------------------------------------------------------------

function renderPeople() {
  const names = new Set([...state.online, ...state.conversations.keys()]);
  names.delete(LOBBY);
  names.delete(state.me);
  const sorted = [...names].sort((a, b) => {
    const online = Number(state.online.has(b)) - Number(state.online.has(a));
    return online || a.localeCompare(b);
  });
  const list = $("people");
  list.replaceChildren(lobbyItem(), ...sorted.map(personItem));
  // On a phone the list hides behind the menu button: it shows the unread total.
  const unread = [...state.conversations.values()].reduce((sum, conv) => sum + conv.unread, 0);
  $("menu").dataset.unread = unread ? String(unread) : "";
  $("online-count").textContent = `(${[...state.online].filter((n) => n !== state.me).length} online)`;
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

function personItem(name) {
  const conv = state.conversations.get(name);
  const item = document.createElement("li");
  item.className = `person${state.online.has(name) ? " online" : ""}${state.active === name ? " active" : ""}`;
  item.dataset.peer = name;
  const button = document.createElement("button");
  button.type = "button";
  const dot = document.createElement("span");
  dot.className = "dot";
  dot.title = state.online.has(name) ? "online" : "offline";
  const label = document.createElement("span");
  label.className = "name";
  label.textContent = name;
  button.append(dot, label);
  if (isBot(name)) {
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
  state.online = new Set(names);
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
  if (msg.sender !== state.me) return false;
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
  if (msg.type === "chat" || msg.type === "subscription") return showMessage(msg);
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
      setOnline(msg.metadata.users || []);
      return systemLine(activeConversation(), msg.message);
    case E.SAVED:
      return systemLine(conversation(msg.metadata.destination), msg.message, "saved");
    case E.NOT_SAVED:
    case E.NOT_SENT:
      return systemLine(conversation(msg.metadata.destination || state.active), msg.message, "error");
    case E.LOGIN_FAILED:
      return onLoginFailed(msg.message);
    case E.SHUTDOWN:
      return showBanner(msg.message || "The chat server is shutting down.");
    default:
      return systemLine(activeConversation(), msg.message, msg.type === "error" ? "error" : "info");
  }
}

function activeConversation() {
  return conversation(state.active);
}

function onWelcome(msg) {
  state.welcomed = true;
  state.retryMs = FIRST_RETRY_MS;
  setConn("online", "online");
  hideBanner();
  showApp();
  setOnline(msg.metadata.online || []);
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

function onPresence({ presence, user }) {
  if (!user || user === state.me) return;
  if (presence === "online") state.online.add(user);
  else state.online.delete(user);
  renderPeople();
  updatePresence();
  const conv = state.conversations.get(user);
  if (conv) systemLine(conv, `${user} is ${presence}.`, "presence");
}

function onLoginFailed(text) {
  if (state.welcomed) {
    // Our previous connection may still be closing on the server: try again shortly.
    showBanner(`${text} Retrying…`);
    state.ws?.close();
    return;
  }
  stop();
  showLogin(text);
}

// --- connection ---------------------------------------------------------------------

function connect() {
  clearTimeout(state.retryTimer);
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/ws`);
  state.ws = ws;
  setConn("connecting", "connecting…");
  ws.addEventListener("open", () => {
    ws.send(JSON.stringify({ type: "login", user: state.me, features: ["stream"] }));
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
  ws.addEventListener("close", () => {
    if (state.ws !== ws) return;
    state.ws = null;
    state.session = null;
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

function showLogin(error = "") {
  $("app").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = error;
  $("login-error").hidden = !error;
  $("login-name").focus();
}

function showApp() {
  $("login").hidden = true;
  $("app").hidden = false;
  $("me").textContent = state.me;
  if (!state.conversations.has(LOBBY)) openConversation(LOBBY);
}

// --- wiring -------------------------------------------------------------------------

async function login(event) {
  event.preventDefault();
  if (!(await loadConfig())) {
    showLogin("The chat page can't reach its server right now; try again in a moment.");
    return;
  }
  const name = $("login-name").value.trim();
  if (!state.nameRe.test(name)) {
    showLogin(`Use ${state.config.name_rule}.`);
    return;
  }
  if (state.me !== name) {
    for (const conv of state.conversations.values()) conv.pane.remove();
    state.conversations.clear();
    state.active = LOBBY;
  }
  state.me = name;
  state.welcomed = false;
  state.wanted = true;
  state.retryMs = FIRST_RETRY_MS;
  localStorage.setItem("chatnet.name", name);
  $("login-error").hidden = true;
  connect();
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
  const name = which === "thermometer" ? state.config.thermometer : state.config.bot;
  openConversation(name);
  sendChat(name, text);
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

function wire() {
  $("login-form").addEventListener("submit", login);
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
  $("logout").addEventListener("click", () => {
    stop();
    setConn("offline", "offline");
    showLogin();
  });
  $("login-name").value = localStorage.getItem("chatnet.name") || "";
}

wire();
loadConfig();
