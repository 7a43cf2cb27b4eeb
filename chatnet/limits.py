"""Limits that more than one process must agree on, defined once.

The chat server, the message API, the web adapter, the clients and the bots all import
these; a limit that only one process knows lives beside the code it bounds.
"""

from __future__ import annotations

from typing import Final

# --- names and lines -------------------------------------------------------------------

MAX_NAME_CHARS: Final = 32
# The one name rule (users, bots, services), as a pattern and as people read it.
# And not dots alone ('.' and '..' mean something else in a URL path): checked beside
# the pattern, which stays free of look-arounds for the regex engines that read it.
NAME_PATTERN: Final = r"^[A-Za-z0-9_.\-]{1,32}$"
NAME_RULE: Final = "1-32 letters, digits, '_', '.' or '-' (not dots alone)"

# A line longer than this is read away and answered with an error, never buffered whole.
MAX_LINE_BYTES: Final = 8192
# Long enough for a paragraph, short enough that a JSON frame of it fits in one line.
MAX_MESSAGE_CHARS: Final = 2000

# Passwords: long enough to mean something, short enough that hashing one is bounded.
MIN_PASSWORD_CHARS: Final = 8
MAX_PASSWORD_CHARS: Final = 128

# What the store can hold of a message's metadata: integers of 64 bits, finite numbers,
# text that is UTF-8, keys without NUL or a leading '$', nesting at most this deep.
MAX_METADATA_DEPTH: Final = 32
INT64_MIN: Final = -(1 << 63)
INT64_MAX: Final = (1 << 63) - 1

# --- the message API's batches and pages -----------------------------------------------

# Messages in one store or archive request.
MAX_BATCH: Final = 1000
# The most pending mail in one page. The chat server takes a user's mail in pages this
# big: each page costs a fetch and an acknowledgement, and a login with thousands
# waiting should take one of each.
MAIL_PAGE = 10_000  # not Final: the unit tests shrink it (chatnet/native.py)
# Users in one POST /mail/pending: a login storm's window of names (the chat server asks
# for FIRST_LOOK_BATCH at once); bounds the `$in` and the answer.
MAX_PENDING_USERS: Final = 1000
# Names in one POST /logins/guests: the same window of logins, asked whether they are
# guests (the chat server sends FIRST_LOOK_BATCH at once).
MAX_GUEST_LOGINS: Final = 1000
# Ids in one acknowledgement: a whole page.
MAX_ACK_IDS: Final = MAIL_PAGE
# Ids a client puts in one ack frame: a frame is one line to the server, and a hundred of
# the longest ids (64 characters) fit in MAX_LINE_BYTES. (The server takes up to
# MAX_BATCH in a frame, as far as the line allows.)
ACK_IDS_PER_FRAME: Final = 100
# The most messages in one page of history.
HISTORY_PAGE: Final = 1000

# --- what a sender may ask of its offline mail (a service capping its readings) ----------

MAX_MAIL_TTL_SECONDS: Final = 366 * 86400
MAX_KEEP_LATEST: Final = 10_000

# --- rooms ----------------------------------------------------------------------------------

# A room is '#' and a name by the name rule (case-insensitive, like a user's name).
ROOM_PATTERN: Final = r"^#[A-Za-z0-9_.\-]{1,32}$"
ROOM_RULE: Final = "'#' and 1-32 letters, digits, '_', '.' or '-'"
# A topic is a line people read at a join: a tweet's worth (IRC servers allow ~300).
MAX_TOPIC_CHARS: Final = 300
# A dead node's names are free again within this many seconds (CLUSTER_TTL).
CLUSTER_TTL: Final = 10.0
# `!join #a #b …`: rooms joined at once, at most (IRC's JOIN #a,#b; its TARGMAX).
MAX_JOINS_AT_ONCE: Final = 10
# Names that left this node remembered for !whowas (IRC's WHOWAS), the newest.
MAX_WHOWAS: Final = 1000
# An away message (!away, IRC's AWAY; its ISUPPORT AWAYLEN).
MAX_AWAY_CHARS: Final = 200
# What the others are shown of why someone left (IRC's QUIT :reason).
MAX_QUIT_CHARS: Final = 300
# Room messages one login is shown at once, at most (the chat server asks for
# ROOM_CATCHUP, 20 by default); more are a `!history` away.
MAX_CATCHUP: Final = 200
# Unread counts stop counting here: reading further back would cost a login more than
# the number is worth ("1000+" says it all).
MAX_UNREAD: Final = 1000
# Users in one POST /rooms/logins (a login storm's window, as for POST /mail/pending),
# and rooms everybody joins at a first login.
MAX_ROOM_LOGINS: Final = 1000
MAX_DEFAULT_ROOMS: Final = 16
# Rooms one user may be in (IRC servers bound joins per client likewise): each is a
# catch-up at every login and a line in the page's list.
MAX_ROOMS_PER_USER: Final = 100
# A room's key (+k): a word, as RFC 2812 has it (1-23 characters, no spaces).
MAX_KEY_CHARS: Final = 23
# A member limit (+l) beyond this is no limit: a room this size is a broadcast.
MAX_ROOM_LIMIT: Final = 100_000
# Bans (+b) per room (IRC's MAXLIST b:100), and a mask's length (nick!user@host, with
# names of 32 characters and wildcards around them).
MAX_BANS: Final = 100
MAX_MASK_CHARS: Final = 100
# Changes in one !mode (IRC's MODES): each one with a value is a lookup in the store.
MAX_MODE_CHANGES: Final = 6
# Read markers in one POST /markers: a batch of acknowledgements, folded per conversation.
MAX_MARKERS: Final = 1000
# Conversations listed for one user (the page's list), most recent first.
MAX_CONVERSATIONS: Final = 500

# --- bots as a service (bot definitions in the message API, run by the bot host) ------------

# Bot definitions at most: each is a peer on the network, and the bot host reads them all
# every second.
MAX_BOTS: Final = 100
# A bot's system prompt: a few pages (the thread it comes with is bounded apart, by the
# definition's max_characters).
MAX_BOT_PROMPT_CHARS: Final = 8000
# A model's name ("gpt-4o-mini", "llama3.2:70b-instruct-q4_K_M", a path on some servers).
MAX_BOT_MODEL_CHARS: Final = 200
# The bot host reports every bot's status about once a second; a report older than this
# means the host (or its loop) is gone, and the API answers online false.
BOT_STATUS_STALE_SECONDS: Final = 5.0
