// The chat page: one WebSocket to the adapter, speaking chatnet's JSON mode.
// Server frames are Message-shaped; notices carry metadata.event.
//
// What the network agrees on (the notice names, the login refusals, the name and room
// rules, the limits, the default rooms) comes from /config.json, loaded before the
// first connection, and is never retyped here.
//
// Logging in: a password goes to the adapter once (POST /api/login or /api/register)
// and is forgotten; the adapter keeps the account's session token in an HttpOnly cookie
// this script can't read, and the WebSocket's login frame carries the name only. So a
// reload or a second tab resumes the account (GET /api/session says whose) without the
// password, and "Leave" (POST /api/logout) ends it. A guest types a name only; the name
// (no secret) is remembered to fill in the form next time.
//
// Names are one identity in any case: people, rooms and conversations are keyed by
// `key(name)` and shown as the server spells them. A conversation is a room ("#hiking")
// or another person; each has its own pane.
//
// Unread counts come from the server: GET /api/conversations at every login (and when
// the tab comes back into view) gives each conversation's count and newest message;
// messages that arrive after that newest one are counted here as they come. A count
// is cleared when its conversation is on screen, and the server is told (its read
// marker moves): for a person through POST /api/read, for a room by acknowledging its
// messages (the chat server moves the room's marker as they are acknowledged), so the
// counts are the same after a reload and on another device. Thermometer readings and
// one's own messages are never unread.
//
// Acknowledged delivery: the chat server counts a message as delivered only once the
// page says it has it. A person's message, once rendered into its pane (or recognised
// by its id as one already shown, and dropped), has its id queued, and the queue goes
// out as `{"type": "ack", "ids": [...]}` a moment later. A room's message is
// acknowledged once its pane has been on screen: until then it is unread, and a page
// that closes before comes back to it at the next login. A page that closes first
// simply hasn't acknowledged: that mail comes again at the next login, and ids keep a
// repeat from being shown twice.
//
// Bots: a `typing` notice shows "<bot> is working…" above the composer of its
// conversation until the bot says it stopped, its answer comes, or TYPING_TIMEOUT_MS
// pass. A bot's answer in a DM has Stop while it streams and Regenerate once it is the
// last one; they send the bot `stop` and `regenerate`, which the page shows (live and in
// history) as small lines of its own. Code blocks have a Copy button. A registered user
// can make a bot with "New bot" (POST /api/bots); it shows online once the bot host
// has started it.

import { renderMarkdown, renderText } from "./markdown.js";

const TITLE = "chatnet";
const FIRST_RETRY_MS = 1000;
const MAX_RETRY_MS = 30000;
// How long shown messages wait for others to share their ack frame. A timer, not an
// animation frame: a background tab gets none, and its mail would stay unacknowledged.
const ACK_DELAY_MS = 50;
// Read markers of one conversation wait this long for newer ones (a burst, one request).
const READ_DELAY_MS = 300;
// Room messages held unacknowledged while their pane is not on screen, at most (the
// chat server keeps as many for an ack reader); past it the oldest are let go unread.
const MAX_HELD = 2000;
const OPEN_KEY = "chatnet.open"; // sessionStorage: the conversation open in this tab (a reload reopens it)
// "… is working" goes when the bot says it is done or its answer comes; one that goes
// away mid-answer says neither, so the line also goes after this long without news
// (longer than a model call may take by default: the bot host's timeout is 30 s).
const TYPING_TIMEOUT_MS = 60000;
// What a bot's answer controls send it, as a DM: these words are its commands. The page
// shows its own such messages as a small line, not as a chat bubble.
const STOP = "stop";
const REGENERATE = "regenerate";
const CONTROL_LINES = { [STOP]: (bot) => `You asked ${bot} to stop.`, [REGENERATE]: (bot) => `You asked ${bot} for another answer.` };
// How long a code block's button says "Copied".
const COPIED_MS = 1500;

const $ = (id) => document.getElementById(id);

const key = (name) => String(name).toLowerCase();
const sameName = (a, b) => a != null && b != null && key(a) === key(b);
const isRoom = (name) => typeof name === "string" && name.startsWith("#");

const state = {
  me: null, // as the server spells it, once welcomed
  account: false, // logged in (or resuming) with the account's session cookie
  mode: "login", // the login form: "login" or "register"
  config: null, // /config.json, once loaded
  nameRe: null, // the name rule as a RegExp, from the config
  roomRe: null, // the room rule likewise
  ws: null,
  session: null, // this socket's handle for the adapter's /api/* routes
  wanted: false, // the person wants to be connected (false after Leave)
  welcomed: false, // a login succeeded at least once in this page
  welcomeShown: false, // the welcome line is shown once, not again at every reconnect
  retryMs: FIRST_RETRY_MS,
  retryTimer: null,
  online: new Map(), // key -> name, who is online now
  bots: new Set(), // keys of everyone the server has said is a bot (presence, welcome, who)
  conversations: new Map(), // key -> conversation
  active: null, // the key of the open conversation
  membersOpen: false, // the members panel of the open room is shown
  pendingJoins: new Set(), // rooms this page asked to join: opened when the server says joined
  roomsAsked: false, // the person asked !rooms (else the answer only fills the join list)
  acks: [], // ids shown (or dropped as repeats), not acknowledged yet
  ackTimer: null,
};

// --- conversations ------------------------------------------------------------------

// The conversation with `name` (a person or a "#room"); `spelling`: the name as the
// server wrote it, which wins.
function conversation(name, spelling = null) {
  const k = key(name);
  let conv = state.conversations.get(k);
  if (!conv) {
    const pane = document.createElement("div");
    pane.className = "messages";
    pane.setAttribute("role", "log");
    pane.hidden = true;
    $("panes").append(pane);
    conv = {
      key: k,
      name,
      kind: isRoom(name) ? "room" : "dm",
      pane,
      ids: new Set(), // ids shown in the pane
      streams: new Map(),
      history: "none", // "none", "loading" or "loaded"
      next: null, // the cursor of the page of history before what is shown
      member: null, // rooms: true or false once known
      topic: "",
      memberCount: null,
      members: null, // rooms: key -> {name, online}, once asked
      membersAsked: false,
      historyLines: 0, // rooms: messages of a !history answer still to come (old, never unread)
      serverUnread: 0, // the server's count when the list was read
      serverLast: null, // [timestamp, id] of the newest message the server had then
      live: [], // [timestamp, id] of messages that came unread since
      held: [], // room messages' ids, acknowledged once the pane is on screen
      newest: null, // the newest message shown ({id, timestamp}): where "read" moves to
      marked: null, // [timestamp, id] the read marker was last moved to
      readTimer: null,
      typing: new Map(), // key -> {name, timer}: who is working on an answer here
    };
    state.conversations.set(k, conv);
  }
  if (spelling && spelling !== conv.name) {
    conv.name = spelling;
    if (state.active === k) renderHeader();
  }
  conv.pane.dataset.peer = conv.name;
  return conv;
}

function activeConversation() {
  return state.active == null ? null : state.conversations.get(state.active) ?? null;
}

function home() {
  return state.config?.default_rooms?.[0] ?? "#general";
}

// Where a page lands: the conversation this tab had open before a reload, else the first default room.
function landing() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(OPEN_KEY) || "null");
    if (saved && sameName(saved.user, state.me) && validTarget(saved.name)) return saved.name;
  } catch {
    // nothing usable saved
  }
  return home();
}

function validTarget(name) {
  return typeof name === "string" && (state.nameRe.test(name) || state.roomRe.test(name));
}

function openConversation(name) {
  const conv = conversation(name);
  state.active = conv.key;
  for (const other of state.conversations.values()) other.pane.hidden = other !== conv;
  if (state.me) sessionStorage.setItem(OPEN_KEY, JSON.stringify({ user: state.me, name: conv.name }));
  closeTopicForm();
  renderHeader();
  document.body.classList.remove("drawer-open");
  if (conv.history === "none") loadHistory(conv);
  markViewed(conv);
  renderSidebar();
  scrollToEnd(conv, true);
  if (canSend(conv)) $("text").focus();
}

function canSend(conv) {
  return Boolean(conv) && !(conv.kind === "room" && conv.member === false);
}

// The open conversation is on screen (the tab is visible and the chat is shown).
function viewing(conv) {
  return conv != null && conv.key === state.active && document.visibilityState === "visible" && !$("app").hidden;
}

function renderHeader() {
  const conv = activeConversation();
  const room = conv?.kind === "room";
  const member = room && conv.member !== false;
  $("pane-title").textContent = conv ? conv.name : TITLE;
  if (!conv) {
    $("pane-presence").textContent = "";
  } else if (room) {
    const n = conv.memberCount;
    $("pane-presence").textContent = !member ? "you are not in this room" : n == null ? "" : `${n} member${n === 1 ? "" : "s"}`;
  } else {
    $("pane-presence").textContent = state.online.has(conv.key) ? "online" : "offline — messages are kept for later";
  }
  const topic = $("pane-topic");
  topic.hidden = !room;
  topic.textContent = room ? conv.topic || (member ? "No topic yet." : "") : "";
  topic.classList.toggle("muted", room && !conv.topic);
  $("room-actions").hidden = !room;
  $("room-join").hidden = !room || member;
  for (const id of ["room-leave", "topic-edit", "members-toggle"]) $(id).hidden = !member;
  const sendable = canSend(conv);
  $("text").disabled = !sendable;
  $("send").disabled = !sendable;
  $("text").placeholder = !conv ? "Pick a room or someone to chat with" : sendable ? `Message ${conv.name}` : `Join ${conv.name} to write here`;
  $("text").title = sendable ? "Enter sends, Shift+Enter starts a new line; /help lists the commands" : "";
  renderMembers();
  renderTyping();
}

function nearEnd(pane) {
  return pane.scrollHeight - pane.scrollTop - pane.clientHeight < 80;
}

function scrollToEnd(conv, force = false) {
  if (force || nearEnd(conv.pane)) conv.pane.scrollTop = conv.pane.scrollHeight;
}

function append(conv, element) {
  const stick = nearEnd(conv.pane);
  // Regenerate is for the last answer only: anything said after it takes the button away.
  if (element.classList.contains("msg")) for (const button of conv.pane.querySelectorAll(".regenerate")) button.remove();
  conv.pane.append(element);
  if (stick) conv.pane.scrollTop = conv.pane.scrollHeight;
}

// --- unread counts and read markers -------------------------------------------------

// Messages are ordered as the server orders them: by timestamp, then id.
function compareKeys(a, b) {
  if (a[0] !== b[0]) return a[0] < b[0] ? -1 : 1;
  return a[1] === b[1] ? 0 : a[1] < b[1] ? -1 : 1;
}

function messageKey(msg) {
  return typeof msg?.id === "string" && typeof msg.timestamp === "string" ? [msg.timestamp, msg.id] : null;
}

// The server's count, and what came after the newest message it counted.
function unreadOf(conv) {
  const last = conv.serverLast;
  return conv.serverUnread + conv.live.filter((k) => !last || compareKeys(k, last) > 0).length;
}

function totalUnread() {
  let total = 0;
  for (const conv of state.conversations.values()) total += unreadOf(conv);
  return total;
}

function noteNewest(conv, msg) {
  const k = messageKey(msg);
  if (k && (!conv.newest || compareKeys(k, messageKey(conv.newest)) > 0)) conv.newest = { id: msg.id, timestamp: msg.timestamp };
}

// A message that is news to this person came into `conv`.
function countUnread(conv, msg) {
  if (viewing(conv)) {
    markRead(conv);
    return;
  }
  const k = messageKey(msg);
  if (k) conv.live.push(k);
  renderSidebar();
}

// The conversation is on screen: what it held is read now.
function markViewed(conv) {
  if (!viewing(conv)) return;
  const had = unreadOf(conv) > 0;
  conv.serverUnread = 0;
  conv.live = [];
  for (const id of conv.held) queueAck(id);
  conv.held = [];
  markRead(conv);
  if (had) renderSidebar();
}

// Tell the server this person has read `conv` up to its newest message shown. The
// newest is taken now, not when the timer fires: a message that comes in the meantime,
// while another conversation is on screen, is not read.
function markRead(conv) {
  const newest = conv.newest;
  const k = messageKey(newest);
  if (!k || (conv.marked && compareKeys(k, conv.marked) <= 0)) return;
  if (conv.kind === "room" && conv.member === false) return;
  clearTimeout(conv.readTimer);
  conv.readTimer = setTimeout(() => sendRead(conv, newest), READ_DELAY_MS);
}

async function sendRead(conv, newest) {
  conv.readTimer = null;
  const k = messageKey(newest);
  if (!state.session || !k || (conv.marked && compareKeys(k, conv.marked) <= 0)) return;
  const body = { conversation: conv.name, id: newest.id, timestamp: newest.timestamp };
  try {
    const answer = await post("/api/read", body, { "X-Chatnet-Session": state.session });
    if (answer.ok) conv.marked = k;
  } catch {
    // not moved: the count comes back after a reload, and goes when it is read again
  }
}

// The server's counts: at each login, and when the tab comes back (another device may have read).
async function loadConversations() {
  const session = state.session;
  if (!session) return;
  let body;
  try {
    const response = await fetch("/api/conversations", { headers: { "X-Chatnet-Session": session } });
    body = await response.json();
    if (!response.ok) return;
  } catch {
    return; // counts stay as this page has them
  }
  if (session !== state.session) return;
  const listed = new Set();
  for (const item of body.conversations || []) {
    const conv = conversation(item.name, item.name);
    listed.add(conv.key);
    if (item.kind === "room") conv.member = true;
    conv.serverUnread = Number(item.unread) || 0;
    conv.serverLast = messageKey(item.last);
  }
  for (const conv of state.conversations.values()) {
    if (conv.kind === "room" && conv.member === null && !listed.has(conv.key)) conv.member = false;
  }
  const active = activeConversation();
  renderHeader();
  if (active) markViewed(active);
  renderSidebar();
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
  // Bot replies are Markdown (sanitised); people's messages are plain text. Links are clickable in both.
  if (isBot(msg.sender) || msg.metadata?.stream) {
    body.classList.add("markdown");
    body.replaceChildren(renderMarkdown(msg.message));
  } else {
    body.replaceChildren(renderText(msg.message));
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

// One's own `stop` or `regenerate` to a bot (from its buttons, typed, or in history).
function controlWord(msg) {
  const word = String(msg.message ?? "").trim().toLowerCase();
  const control = Object.hasOwn(CONTROL_LINES, word) && sameName(msg.sender, state.me) && !isRoom(msg.destination) && isBot(msg.destination);
  return control ? word : null;
}

function controlElement(msg, word) {
  const line = document.createElement("div");
  line.className = "system control";
  if (msg.id) line.dataset.id = msg.id;
  line.textContent = CONTROL_LINES[word](msg.destination);
  line.title = timestampTitle(msg.timestamp);
  return line;
}

function timestampTitle(timestamp) {
  return `${timestamp} (${clock(timestamp)})`;
}

// A message's row; it carries the message's key, so history can be put among the rows shown.
function messageElement(msg) {
  const element = messageRow(msg);
  if (messageKey(msg)) element.dataset.ts = msg.timestamp;
  return element;
}

function messageRow(msg) {
  if (msg.type === "subscription" && msg.metadata && "value" in msg.metadata) return readingElement(msg);
  const word = controlWord(msg);
  if (word) return controlElement(msg, word);
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
  if (msg.metadata?.stored) meta.append(tagElement("stored"));
  const body = document.createElement("div");
  body.className = "body";
  setBody(body, msg);
  row.append(meta, body);
  return row;
}

// A small label beside a name: "bot", "stored".
function tagElement(text) {
  const tag = document.createElement("span");
  tag.className = "tag";
  tag.textContent = text;
  return tag;
}

// Mail handed over again whose row is on screen already (from history, say, which won the
// race with the handover after a reload): it says it waited for the reader, as it would have.
function markRepeat(conv, msg) {
  if (!msg.metadata?.stored) return;
  const meta = conv.pane.querySelector(`.msg[data-id="${CSS.escape(msg.id)}"] .meta`);
  if (meta && !meta.querySelector(".tag")) meta.append(tagElement("stored"));
}

// A line from the server or the page itself (not a message) in `conv`'s pane (or the open one).
function systemLine(conv, text, kind = "info") {
  conv ??= activeConversation() ?? conversation(home());
  const line = document.createElement("div");
  line.className = `system ${kind}`;
  line.textContent = text;
  append(conv, line);
  return line;
}

// A person's, a bot's or a room's message. Returns its conversation (null: none).
function showMessage(msg) {
  const mine = sameName(msg.sender, state.me);
  const toRoom = isRoom(msg.destination);
  // A copy of what this account sent itself from another session: the message itself comes too.
  if (msg.metadata?.echo && mine && sameName(msg.destination, state.me)) return null;
  const peer = toRoom || mine ? msg.destination : msg.sender;
  if (!peer) return null;
  const conv = conversation(peer, toRoom ? msg.destination : mine ? null : msg.sender);
  if (msg.id && conv.ids.has(msg.id)) {
    markRepeat(conv, msg); // a repeat (mail handed over again): shown already
    return conv;
  }
  if (!mine) stopTyping(conv, msg.sender); // its answer is here (or coming in): no longer "working"
  const stream = msg.metadata?.stream;
  if (stream?.id && showStreamPart(conv, msg, stream)) {
    if (msg.id) conv.ids.add(msg.id);
    if (stream.done) afterMessage(conv, msg, mine, false);
    return conv;
  }
  if (msg.id) conv.ids.add(msg.id);
  if (toRoom && conv.member !== true) {
    conv.member = true; // a room's message comes to its members
    renderSidebar();
  }
  const reading = msg.type === "subscription";
  if (reading && sameName(peer, state.config.thermometer)) showLatestReading(msg);
  const old = toRoom && conv.historyLines > 0; // a line of a !history answer
  if (old) conv.historyLines -= 1;
  const row = messageElement(msg);
  append(conv, row);
  if (msg.metadata?.stream && answerControls(conv, msg)) addRegenerate(conv, row, msg.sender);
  afterMessage(conv, msg, mine || reading || old, reading);
  return conv;
}

// A bot's streamed answer in a DM gets Stop while it streams and Regenerate once done.
function answerControls(conv, msg) {
  return conv.kind === "dm" && !sameName(msg.sender, state.me) && isBot(msg.sender);
}

function controlButton(className, label, title, onClick) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = `answer-control ${className}`;
  button.textContent = label;
  button.title = title;
  button.addEventListener("click", onClick);
  return button;
}

function addRegenerate(conv, row, bot) {
  const button = controlButton("regenerate", "Regenerate", `Ask ${bot} to answer the last question again`, () => {
    if (sendControl(bot, REGENERATE)) button.remove();
  });
  row.querySelector(".meta")?.append(button);
}

function isLastMessage(row) {
  for (let next = row.nextElementSibling; next; next = next.nextElementSibling) if (next.classList.contains("msg")) return false;
  return true;
}

// `stop` or `regenerate` to `bot`, shown as a small line of its own.
function sendControl(bot, word) {
  return sendChat(bot, word);
}

function afterMessage(conv, msg, notNews, reading) {
  noteNewest(conv, msg);
  if (!notNews) countUnread(conv, msg);
  else if (reading && unreadOf(conv) === 0) markRead(conv); // a reading is not news: read as it comes
  if (!sameName(msg.sender, state.me) && sameName(msg.sender, state.config.bot)) notePersonality(msg.message);
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
    entry.row.querySelector(".stop-answer")?.remove();
    if (answerControls(conv, msg) && isLastMessage(entry.row)) addRegenerate(conv, entry.row, msg.sender);
    scrollToEnd(conv);
    return true;
  }
  if (!entry) {
    const row = messageElement({ ...msg, message: "" });
    row.classList.add("streaming");
    entry = { row, body: row.querySelector(".body"), text: "" };
    conv.streams.set(stream.id, entry);
    append(conv, row);
    if (answerControls(conv, msg)) {
      const bot = msg.sender;
      const stop = controlButton("stop-answer", "Stop", `Ask ${bot} to stop this answer`, () => {
        if (sendControl(bot, STOP)) stop.disabled = true;
      });
      row.querySelector(".meta")?.append(stop);
    }
  }
  entry.text += msg.message;
  setBody(entry.body, { ...msg, message: entry.text });
  scrollToEnd(conv);
  return true;
}

// --- "… is working": the typing notice --------------------------------------------

// Someone is working on an answer here (a bot: its model is), or has stopped.
function onTyping(meta) {
  if (typeof meta.user !== "string" || !state.nameRe.test(meta.user) || sameName(meta.user, state.me)) return;
  const conv = meta.room == null ? conversation(meta.user, meta.user) : roomOf(meta);
  if (!conv) return;
  if (meta.active === true) startTyping(conv, meta.user);
  else stopTyping(conv, meta.user);
}

function startTyping(conv, name) {
  const k = key(name);
  clearTimeout(conv.typing.get(k)?.timer);
  conv.typing.set(k, { name, timer: setTimeout(() => stopTyping(conv, name), TYPING_TIMEOUT_MS) });
  if (conv.key === state.active) renderTyping();
}

function stopTyping(conv, name) {
  const entry = conv.typing.get(key(name));
  if (!entry) return;
  clearTimeout(entry.timer);
  conv.typing.delete(key(name));
  if (conv.key === state.active) renderTyping();
}

// The line above the composer says who is working in the open conversation; in a DM
// with a bot it has a Stop button (the answer can be stopped before it starts to come).
function renderTyping() {
  const conv = activeConversation();
  const line = $("typing");
  const working = conv ? [...conv.typing.values()] : [];
  line.hidden = !working.length;
  if (!working.length) {
    line.replaceChildren();
    return;
  }
  const said = working.map(({ name }) => `${name} is ${isBot(name) ? "working" : "typing"}…`).join(" ");
  const text = document.createElement("span");
  text.className = "typing-text";
  text.textContent = said;
  line.replaceChildren(text);
  const bot = working[0].name;
  if (conv.kind === "dm" && isBot(bot)) {
    const stop = controlButton("stop-answer", "Stop", `Ask ${bot} to stop this answer`, () => {
      if (sendControl(bot, STOP)) stop.disabled = true;
    });
    line.append(stop);
  }
}

// --- code blocks: the copy button -------------------------------------------------

async function copyCode(button) {
  const code = button.parentElement?.querySelector("pre")?.textContent ?? "";
  let copied = false;
  try {
    await navigator.clipboard.writeText(code);
    copied = true;
  } catch {
    copied = copyBySelection(code); // no clipboard API (a page over plain http on another host)
  }
  button.textContent = copied ? "Copied" : "Copy failed";
  setTimeout(() => {
    button.textContent = "Copy";
  }, COPIED_MS);
}

function copyBySelection(text) {
  const area = document.createElement("textarea");
  area.value = text;
  area.setAttribute("readonly", "");
  area.className = "offscreen";
  document.body.append(area);
  area.select();
  let copied = false;
  try {
    copied = document.execCommand("copy");
  } catch {
    copied = false;
  }
  area.remove();
  return copied;
}

// --- the "New bot" form --------------------------------------------------------------

function renderNewBot() {
  $("new-bot").hidden = !state.account;
  $("new-bot-guest").hidden = state.account;
}

function showNewBotResult(text, error = false) {
  const result = $("new-bot-result");
  result.textContent = text;
  result.classList.toggle("error", error);
  result.classList.toggle("muted", !error);
  result.hidden = !text;
}

async function createBot(event) {
  event.preventDefault();
  const name = $("new-bot-name").value.trim();
  if (!state.nameRe.test(name)) {
    showNewBotResult(`A bot's name: use ${state.config.name_rule}.`, true);
    return;
  }
  if (!state.session) {
    showNewBotResult("Not connected — try again in a moment.", true);
    return;
  }
  const body = { name, system: $("new-bot-system").value.trim(), model: $("new-bot-model").value.trim() };
  $("new-bot-submit").disabled = true;
  showNewBotResult("Creating…");
  let answer;
  try {
    answer = await post("/api/bots", body, { "X-Chatnet-Session": state.session });
  } catch {
    answer = { ok: false, body: { error: UNREACHABLE } };
  } finally {
    $("new-bot-submit").disabled = false;
  }
  if (!answer.ok) {
    showNewBotResult(answer.body.error || "The bot was not created.", true);
    return;
  }
  for (const id of ["new-bot-name", "new-bot-system", "new-bot-model"]) $(id).value = "";
  const made = answer.body.name || name;
  showNewBotResult(`${made} is made; it comes online in a moment.`);
  conversation(made, made);
  renderSidebar();
}

// --- acknowledgements -------------------------------------------------------------

// The page will do nothing more with `msg` (shown, a repeat, or never showable): say so,
// except for a room's message nobody has seen yet, which waits for its pane.
function settle(conv, msg) {
  if (typeof msg.id !== "string" || !msg.id) return;
  const unseen = conv?.kind === "room" && isRoom(msg.destination) && !sameName(msg.sender, state.me) && conv.member !== false;
  if (unseen && !viewing(conv)) {
    if (!conv.held.includes(msg.id)) conv.held.push(msg.id);
    if (conv.held.length > MAX_HELD) conv.held.shift();
    return;
  }
  queueAck(msg.id);
}

function queueAck(id) {
  state.acks.push(id);
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

// --- the sidebar: rooms, people, bots -----------------------------------------------

function displayName(k) {
  return state.conversations.get(k)?.name ?? state.online.get(k) ?? k;
}

function renderSidebar() {
  renderRooms();
  renderPeople();
  const unread = totalUnread();
  document.title = unread ? `(${unread}) ${TITLE}` : TITLE;
  // On a phone the lists hide behind the menu button: it shows the unread total.
  $("menu").dataset.unread = unread ? String(unread) : "";
  const others = [...state.online.keys()].filter((k) => !state.me || k !== key(state.me));
  $("online-count").textContent = `(${others.length} online)`;
}

function renderRooms() {
  const rooms = [...state.conversations.values()].filter((conv) => conv.kind === "room" && conv.member === true);
  rooms.sort((a, b) => a.name.localeCompare(b.name));
  $("rooms").replaceChildren(...rooms.map(roomItem));
}

function roomItem(conv) {
  const item = document.createElement("li");
  item.className = `person room${state.active === conv.key ? " active" : ""}`;
  item.dataset.room = conv.name;
  const button = document.createElement("button");
  button.type = "button";
  const mark = document.createElement("span");
  mark.className = "hash";
  mark.textContent = "#";
  const label = document.createElement("span");
  label.className = "name";
  label.textContent = conv.name.slice(1);
  button.append(mark, label);
  if (conv.topic) button.title = conv.topic;
  addBadge(button, unreadOf(conv));
  button.addEventListener("click", () => openConversation(conv.name));
  item.append(button);
  return item;
}

function renderPeople() {
  const keys = new Set(state.online.keys());
  for (const conv of state.conversations.values()) if (conv.kind === "dm") keys.add(conv.key);
  if (state.me && !state.conversations.has(key(state.me))) keys.delete(key(state.me));
  const sorted = [...keys].sort((a, b) => {
    const online = Number(state.online.has(b)) - Number(state.online.has(a));
    return online || displayName(a).localeCompare(displayName(b));
  });
  $("people").replaceChildren(...sorted.map(personItem));
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
  label.textContent = sameName(name, state.me) ? `${name} (you)` : name;
  button.append(dot, label);
  if (isBot(name)) {
    item.classList.add("bot");
    button.append(tagElement("bot"));
  }
  if (conv) addBadge(button, unreadOf(conv));
  button.addEventListener("click", () => openConversation(name));
  item.append(button);
  return item;
}

function addBadge(button, unread) {
  if (!unread) return;
  const badge = document.createElement("span");
  badge.className = "unread";
  badge.textContent = String(unread);
  badge.setAttribute("aria-label", `${unread} unread`);
  button.append(badge);
}

function setOnline(names) {
  state.online = new Map(names.map((name) => [key(name), name]));
  afterPresence();
}

function afterPresence() {
  renderSidebar();
  renderHeader();
  renderBotPanels();
}

// Each bot's panel shows while that bot is online, as the server says (not just the name).
function renderBotPanels() {
  const up = (name) => state.online.has(key(name)) && isBot(name);
  const thermo = up(state.config.thermometer);
  const assistant = up(state.config.bot);
  $("thermo-panel").hidden = !thermo;
  $("assistant-panel").hidden = !assistant;
  $("bots-heading").hidden = !thermo && !assistant;
}

// --- rooms: members and topic -------------------------------------------------------

function renderMembers() {
  const conv = activeConversation();
  const show = state.membersOpen && conv?.kind === "room" && conv.member !== false;
  $("members").hidden = !show;
  $("members-toggle").setAttribute("aria-pressed", String(show));
  if (!show) return;
  if (!conv.members) {
    if (!conv.membersAsked && sendCommand(`!members ${conv.name}`, true)) conv.membersAsked = true;
    $("members-count").textContent = "";
    $("members-list").replaceChildren();
    return;
  }
  const members = [...conv.members.values()].sort((a, b) => Number(b.online) - Number(a.online) || a.name.localeCompare(b.name));
  $("members-count").textContent = `(${members.length})`;
  $("members-list").replaceChildren(
    ...members.map((member) => {
      const item = document.createElement("li");
      item.className = `person${member.online ? " online" : ""}`;
      item.dataset.member = member.name;
      const button = document.createElement("button");
      button.type = "button";
      const dot = document.createElement("span");
      dot.className = "dot";
      dot.title = member.online ? "online" : "offline";
      const label = document.createElement("span");
      label.className = "name";
      label.textContent = member.name;
      button.append(dot, label);
      if (isBot(member.name)) {
        button.append(tagElement("bot"));
      }
      if (!sameName(member.name, state.me)) button.addEventListener("click", () => openConversation(member.name));
      item.append(button);
      return item;
    }),
  );
}

function openTopicForm() {
  const conv = activeConversation();
  if (conv?.kind !== "room") return;
  $("topic-text").value = conv.topic;
  $("topic-form").hidden = false;
  $("topic-text").focus();
}

function closeTopicForm() {
  $("topic-form").hidden = true;
}

function joinRoom(name) {
  const conv = state.conversations.get(key(name));
  if (conv?.member === true) {
    openConversation(conv.name);
    return;
  }
  state.pendingJoins.add(key(name));
  sendCommand(`!join ${name}`);
}

// "hiking" or "#hiking" as a room's name; null if it can't be one.
function roomName(text) {
  const word = String(text).trim().split(/\s+/)[0] || "";
  const room = word.startsWith("#") ? word : `#${word}`;
  return state.roomRe.test(room) ? room : null;
}

// --- history ------------------------------------------------------------------------

async function loadHistory(conv) {
  if (!state.session || conv.history === "loading") return;
  if (conv.kind === "room" && conv.member === false) return;
  const was = conv.history;
  conv.history = "loading";
  const params = new URLSearchParams({ with: conv.name, limit: String(state.config.history_page) });
  if (conv.next) params.set("cursor", conv.next);
  try {
    const response = await fetch(`/api/history?${params}`, { headers: { "X-Chatnet-Session": state.session } });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error || response.statusText);
    conv.next = body.next ?? null;
    insertHistory(conv, body.messages);
    conv.history = "loaded";
  } catch (error) {
    conv.history = was;
    systemLine(conv, `History unavailable: ${error.message}`, "error");
  }
}

// A page of history (oldest first) goes in without duplicates, each message in the
// server's order among the messages on screen: mostly above everything, but mail handed
// over at login may be on screen before the history around it comes, and older than some
// of it. A message goes right after the last one before it, or on top if none is.
function insertHistory(conv, messages) {
  conv.pane.querySelector(".load-earlier")?.remove();
  const fromBottom = conv.pane.scrollHeight - conv.pane.scrollTop;
  const rows = [...conv.pane.querySelectorAll("[data-ts]")];
  for (const msg of messages) {
    if (!msg.id || conv.ids.has(msg.id)) continue;
    conv.ids.add(msg.id);
    noteNewest(conv, msg);
    if (isLocalEcho(conv, msg)) continue;
    const element = messageElement(msg);
    const k = messageKey(msg);
    const later = k ? rows.findIndex((row) => compareKeys(rowKey(row), k) > 0) : 0;
    const at = later < 0 ? rows.length : later;
    if (at === 0) conv.pane.prepend(element);
    else rows[at - 1].after(element);
    if (k) rows.splice(at, 0, element);
  }
  addLoadEarlier(conv);
  conv.pane.scrollTop = conv.pane.scrollHeight - fromBottom;
  if (viewing(conv)) markRead(conv);
}

// "Load earlier messages" while the server says there are more (its cursor), and only then.
function addLoadEarlier(conv) {
  if (!conv.next || conv.pane.querySelector(".load-earlier")) return;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "load-earlier";
  button.textContent = "Load earlier messages";
  button.addEventListener("click", () => loadHistory(conv));
  conv.pane.prepend(button);
}

function rowKey(row) {
  return [row.dataset.ts, row.dataset.id];
}

// A message this page showed when it was sent (the server gives it its id later).
function isLocalEcho(conv, msg) {
  if (!sameName(msg.sender, state.me)) return false;
  for (const row of conv.pane.querySelectorAll(".msg.mine.local, .system.control.local")) {
    if (row.sentText === msg.message) {
      row.classList.remove("local");
      row.dataset.id = msg.id;
      row.dataset.ts = msg.timestamp;
      return true;
    }
  }
  return false;
}

// --- the assistant's personality ----------------------------------------------------

async function loadPersonality() {
  if (!state.session) return;
  try {
    const response = await fetch("/api/personality", { headers: { "X-Chatnet-Session": state.session } });
    if (response.ok) showPersonality((await response.json()).personality);
  } catch {
    // the menu keeps what it shows
  }
}

// The assistant's answers to `personality` and `rotate` name the one now in use.
function notePersonality(text) {
  const found = /^Personality(?: set to|:) ([^\s.]+)\./.exec(String(text));
  if (found) showPersonality(found[1]);
}

function showPersonality(name) {
  const select = $("personality-name");
  const option = [...select.options].find((o) => sameName(o.value, name));
  if (option) select.value = option.value;
}

// --- frames from the adapter --------------------------------------------------------

function handleFrame(msg) {
  const event = msg.metadata?.event;
  if (msg.type === "chat" || msg.type === "subscription") {
    const conv = showMessage(msg); // should rendering throw, the message is not acknowledged
    return settle(conv, msg);
  }
  const E = state.config.events; // chatnet.protocol.Event, by name
  const meta = msg.metadata || {};
  const kind = msg.type === "error" ? "error" : "info";
  switch (event) {
    case E.WELCOME:
      return onWelcome(msg);
    case E.SESSION:
      return onSession(meta.token);
    case E.STATUS:
      return onStatus(msg);
    case E.PRESENCE:
      return onPresence(meta);
    case E.WHO:
      markBots(meta.bots);
      setOnline([...(meta.users || []), ...(meta.bots || [])]);
      return systemLine(null, msg.message);
    case E.HELP:
      return systemLine(null, msg.message, "help");
    case E.SAVED:
      return systemLine(conversation(meta.destination), msg.message, "saved");
    case E.NOT_SAVED:
    case E.NOT_SENT:
      return systemLine(meta.destination ? conversation(meta.destination) : null, msg.message, "error");
    case E.LOGIN_FAILED:
      return onLoginFailed(msg);
    case E.TYPING:
      return onTyping(meta);
    case E.REGISTERED:
      state.account = true; // a guest's !register: the name is an account's now
      renderNewBot();
      return systemLine(null, msg.message);
    case E.SHUTDOWN:
      return showBanner(msg.message || "The chat server is shutting down.");
    case E.JOINED:
      return onJoined(msg, meta);
    case E.LEFT:
      return onLeft(msg, meta);
    case E.ROOM_PRESENCE:
      return onRoomPresence(msg, meta);
    case E.TOPIC:
      return onTopic(msg, meta);
    case E.MEMBERS:
      return onMembers(msg, meta);
    case E.ROOMS:
      return onRooms(msg, meta);
    case E.CATCHUP:
      return systemLine(roomOf(meta), msg.message, "catchup");
    case E.HISTORY: {
      const conv = roomOf(meta);
      if (conv) conv.historyLines = Number(meta.shown) || 0;
      return systemLine(conv, msg.message);
    }
    case E.INVITED:
      // To the invitee (not in the room yet): where they are; to the inviter: the room.
      return systemLine(sameName(meta.user, state.me) ? null : roomOf(meta), msg.message);
    default:
      // A room's notice or refusal goes to its pane; anything else to the open one.
      return systemLine(roomOf(meta), msg.message, kind);
  }
}

// The room a notice is about (as the server spells it), or null.
function roomOf(meta) {
  return isRoom(meta.room) && state.roomRe.test(meta.room) ? conversation(meta.room, meta.room) : null;
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
  if (state.active == null) openConversation(landing());
  if (!state.welcomeShown) {
    // Once: a reconnect logs in again, and says nothing new.
    state.welcomeShown = true;
    systemLine(null, msg.message, "welcome");
  }
}

async function onSession(token) {
  state.session = token;
  loadPersonality();
  // The rooms there are, for the join field's suggestions (said only when asked).
  sendCommand("!rooms", true);
  await loadConversations(); // first: it says which rooms this user is in
  const active = activeConversation();
  if (active && active.history === "none") loadHistory(active);
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

// Presence is shown by the dots and the pane's header, never as lines in a conversation.
function onPresence({ presence, user, bot }) {
  if (!user || sameName(user, state.me)) return;
  if (bot === true) state.bots.add(key(user));
  if (presence === "online") state.online.set(key(user), user);
  else state.online.delete(key(user));
  afterPresence();
}

function onJoined(msg, meta) {
  const conv = roomOf(meta);
  if (!conv) return systemLine(null, msg.message);
  conv.member = true;
  conv.topic = meta.topic || "";
  conv.memberCount = Number.isFinite(meta.members) ? meta.members : conv.memberCount;
  conv.members = null; // asked again when the panel shows
  systemLine(conv, msg.message, "joined");
  if (state.pendingJoins.delete(conv.key)) openConversation(conv.name);
  else if (state.active === conv.key) renderHeader();
  if (conv.history === "none" && state.active === conv.key) loadHistory(conv);
  renderSidebar();
}

function onLeft(msg, meta) {
  const conv = roomOf(meta);
  if (!conv) return systemLine(null, msg.message);
  conv.member = false;
  conv.held = [];
  conv.serverUnread = 0;
  conv.live = [];
  conv.members = null;
  systemLine(conv, msg.message, "left");
  renderHeader();
  renderSidebar();
}

function onRoomPresence(msg, meta) {
  const conv = roomOf(meta);
  if (!conv || !meta.user) return;
  const k = key(meta.user);
  const known = conv.members?.has(k) ?? false;
  if (meta.presence === "left") {
    if ((known || !conv.members) && conv.memberCount) conv.memberCount -= 1;
    conv.members?.delete(k);
  } else {
    if (meta.presence === "joined" && !known && conv.memberCount != null) conv.memberCount += 1;
    conv.members?.set(k, { name: meta.user, online: meta.presence !== "offline" });
  }
  // Comings and goings of members are said in the room; going online or offline is not news.
  if (meta.presence === "joined" || meta.presence === "left") {
    systemLine(conv, meta.presence === "joined" ? `${meta.user} joined ${conv.name}.` : `${meta.user} left ${conv.name}.`, "presence");
  }
  if (state.active === conv.key) renderHeader();
}

function onTopic(msg, meta) {
  const conv = roomOf(meta);
  if (!conv) return systemLine(null, msg.message);
  conv.topic = meta.topic || "";
  systemLine(conv, msg.message, "topic");
  if (state.active === conv.key) renderHeader();
  renderRooms();
}

function onMembers(msg, meta) {
  const conv = roomOf(meta);
  if (!conv) return systemLine(null, msg.message);
  const list = Array.isArray(meta.members) ? meta.members : [];
  conv.members = new Map(list.map((m) => [key(m.name), { name: m.name, online: Boolean(m.online) }]));
  conv.memberCount = list.length;
  if (conv.membersAsked) conv.membersAsked = false; // the panel's own question
  else systemLine(null, msg.message);
  if (state.active === conv.key) renderHeader();
}

function onRooms(msg, meta) {
  const rooms = Array.isArray(meta.rooms) ? meta.rooms : [];
  $("room-list").replaceChildren(...rooms.map((room) => new Option(room.topic || "", room.name)));
  if (state.roomsAsked) {
    state.roomsAsked = false;
    systemLine(null, msg.message);
  }
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
    ws.send(JSON.stringify({ type: "login", user: state.me, features: ["stream", "ack", "typing"] }));
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

function send(frame, { quiet = false } = {}) {
  if (!state.ws || state.ws.readyState !== WebSocket.OPEN) {
    if (!quiet) systemLine(null, "Not connected — that was not sent.", "error");
    return false;
  }
  state.ws.send(JSON.stringify(frame));
  return true;
}

function sendChat(destination, text) {
  if (!send({ type: "chat", destination, message: text })) return false;
  if (sameName(destination, state.me)) return true; // to oneself: the server's copy comes back, shown then
  const msg = { id: null, sender: state.me, destination, message: text, timestamp: new Date().toISOString(), type: "chat", metadata: {} };
  const row = messageElement(msg);
  row.classList.add("local");
  row.sentText = text; // what its copy in history will say (a control line shows other words)
  append(conversation(destination), row);
  return true;
}

// `quiet`: the page asks on its own account, so there is no one to tell if it can't.
function sendCommand(text, quiet = false) {
  return send({ type: "command", message: text }, { quiet });
}

// --- the composer: messages, !commands and /commands --------------------------------

const SLASH_HELP = [
  "Commands in the message box:",
  "  /msg <name> <text>   send to someone (or a #room) without leaving this conversation's list",
  "  /join #room          join a room (made if there is none: you own it)",
  "  /part [#room]        leave this room (or the one named)",
  "  /topic [text]        show or set this room's topic",
  "  /members             show this room's members",
  "  /who  /rooms  /check  /help",
  "  !<command> ...       a chat server command, as a terminal sends it (!help lists them)",
  "  //text               send text that starts with '/'",
].join("\n");

function submitMessage(event) {
  event.preventDefault();
  const textarea = $("text");
  const text = textarea.value.trim();
  if (!text) return;
  let done;
  if (text.startsWith("//")) done = say(activeConversation(), text.slice(1));
  else if (text.startsWith("/")) done = slashCommand(text);
  else if (/^![A-Za-z]/.test(text)) done = bangCommand(text);
  else done = say(activeConversation(), text);
  if (done) {
    textarea.value = "";
    textarea.style.height = "";
  }
}

function say(conv, text) {
  if (!canSend(conv)) return false;
  if (text.length > state.config.max_message_chars) {
    systemLine(conv, `Too long: ${text.length} characters (the limit is ${state.config.max_message_chars}).`, "error");
    return false;
  }
  return sendChat(conv.name, text);
}

function bangCommand(text) {
  const [word, arg = ""] = text.slice(1).split(/\s+/, 2);
  const command = word.toLowerCase();
  if (command === "join" && roomName(arg)) state.pendingJoins.add(key(roomName(arg)));
  if (command === "rooms") state.roomsAsked = true;
  return sendCommand(text);
}

function slashCommand(text) {
  const [, word, rest] = /^\/(\S+)\s*([\s\S]*)$/.exec(text);
  const active = activeConversation();
  const room = active?.kind === "room" ? active.name : null;
  const usage = (line) => {
    systemLine(null, line, "error");
    return false;
  };
  switch (word.toLowerCase()) {
    case "msg":
    case "m":
    case "query": {
      const found = /^(\S+)\s+([\s\S]+)$/.exec(rest);
      if (!found || !validTarget(found[1])) return usage("Write /msg <name> <message> (or /msg #room <message>).");
      const target = conversation(found[1]);
      if (!canSend(target)) return usage(`You are not in ${target.name}; /join ${target.name} first.`);
      openConversation(target.name);
      return say(target, found[2].trim());
    }
    case "join":
    case "j": {
      const name = roomName(rest);
      if (!name) return usage(`Write /join #room (${state.config.room_rule}).`);
      joinRoom(name);
      return true;
    }
    case "part":
    case "leave": {
      const name = rest.trim() ? roomName(rest) : room;
      if (!name) return usage("Write /part #room (or use it in the room itself).");
      return sendCommand(`!leave ${name}`);
    }
    case "topic":
      if (!room) return usage("Use /topic in a room: /topic <text> sets it.");
      return sendCommand(rest.trim() ? `!topic ${room} ${rest.trim()}` : `!topic ${room}`);
    case "members":
      if (!room) return usage("Use /members in a room.");
      state.membersOpen = true;
      active.members = null;
      renderHeader();
      return true;
    case "rooms":
      state.roomsAsked = true;
      return sendCommand("!rooms");
    case "who":
    case "check":
      return sendCommand(`!${word.toLowerCase()}`);
    case "help":
      systemLine(null, SLASH_HELP, "help");
      return sendCommand("!help");
    default:
      return usage(`Unknown command /${word}; /help lists them.`);
  }
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
  document.title = TITLE;
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
  renderHeader();
  renderSidebar();
  renderNewBot();
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
async function post(path, body, headers = {}) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...headers },
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
    state.active = null;
  }
  state.me = name;
  state.account = account;
  state.welcomed = false;
  state.welcomeShown = false;
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
  state.roomRe = new RegExp(config.room_pattern);
  for (const input of [$("login-name"), $("new-chat-name")]) {
    input.pattern = config.name_pattern.replace(/^\^|\$$/g, ""); // the attribute is anchored already
    input.title = config.name_rule;
    input.maxLength = config.max_name_chars;
  }
  $("join-room-name").title = config.room_rule;
  $("join-room-name").maxLength = config.max_name_chars + 1;
  $("topic-text").maxLength = config.max_topic_chars;
  $("new-bot-name").pattern = $("login-name").pattern;
  $("new-bot-name").title = config.name_rule;
  $("new-bot-name").maxLength = config.max_name_chars;
  $("new-bot-system").maxLength = config.max_prompt_chars;
  $("new-bot-model").maxLength = config.max_model_chars;
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
  const joinField = $("join-room-name");
  joinField.addEventListener("input", () => joinField.setCustomValidity(""));
  $("join-room").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = roomName(joinField.value);
    if (!name) {
      joinField.setCustomValidity(`A room is ${state.config.room_rule}.`);
      joinField.reportValidity();
      return;
    }
    joinField.value = "";
    joinRoom(name);
  });
  $("room-join").addEventListener("click", () => {
    const conv = activeConversation();
    if (conv?.kind === "room") joinRoom(conv.name);
  });
  $("room-leave").addEventListener("click", () => {
    const conv = activeConversation();
    if (conv?.kind === "room") sendCommand(`!leave ${conv.name}`);
  });
  $("members-toggle").addEventListener("click", () => {
    state.membersOpen = !state.membersOpen;
    const conv = activeConversation();
    if (state.membersOpen && conv) conv.members = null; // fresh from the server each time it opens
    renderHeader();
  });
  $("topic-edit").addEventListener("click", openTopicForm);
  $("topic-cancel").addEventListener("click", closeTopicForm);
  $("topic-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const conv = activeConversation();
    const text = $("topic-text").value.trim();
    if (conv?.kind !== "room" || !text) return;
    if (sendCommand(`!topic ${conv.name} ${text}`)) closeTopicForm();
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState !== "visible" || !state.session) return;
    loadConversations(); // another device may have read meanwhile
    const conv = activeConversation();
    if (conv) markViewed(conv);
  });
  $("menu").addEventListener("click", () => document.body.classList.toggle("drawer-open"));
  $("panes").addEventListener("click", (event) => {
    const button = event.target.closest?.(".copy-code");
    if (button) copyCode(button);
  });
  $("new-bot").addEventListener("submit", createBot);
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
