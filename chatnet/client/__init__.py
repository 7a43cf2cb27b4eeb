"""The terminal client: text mode over TCP, with /commands, a current target, Tab
completion, local times and reconnection.

    Joined #hiking (3 members, 2 online).              (typed: /join #hiking)
    Talking to #hiking now: plain lines go there (/query alone stops).
    10:05 #hiking <alice> who's in?                    (typed: who's in?)
    10:06 #hiking <bob> me
    10:06 [to carol] are you coming?                   (typed: /msg carol are you coming?)
    10:07 [carol] yes!
    [#hiking]> _

On a terminal the input line is a prompt_toolkit prompt: incoming lines are printed
above it (`patch_stdout`), so a line being typed is never mangled; the prompt shows the
current target (`[#hiking]> `) and Tab completes /commands, !commands, names and rooms.
When stdin is a pipe or a file, lines are read plainly, so scripts and tests can drive
the client; everything but the prompt and completion works the same.

What the server says is shown as it says it, except chat lines: their UTC ISO
timestamps become local times (`10:05`, with the date when it is not today), and stored
mail is marked `[stored]`. What the person sends is shown back, since the server echoes
nothing to a text session.

After a first login the client stays: when the connection breaks (the server restarts,
the network drops) it says so and connects again after 1, 2, 4 … 30 s, logging in again
with the same name and password, until it is back or the person leaves. The session ends
on `/quit` (or `exit`), end of input (Ctrl-D), Ctrl-C or SIGTERM, with exit status 0;
failing to reach the server at the very start, or being closed before any login, is
status 1. Each says so in one line, never with a traceback.

With `tls` it connects to CHAT_TLS_PORT and verifies the server's certificate (against
`cafile`; by default the system's CAs plus DATA_DIR/tls/cert.pem, the launcher's
self-signed one). A registered name makes the server ask `Password:`: the answer is
CHATNET_PASSWORD when set, else typed without echo. The password that logged in is kept
in memory for logging in again (and follows `!register` / `!password`); it is never
shown, logged, or kept in the input history.
"""

from chatnet.client.connection import main, run_client

__all__ = ["main", "run_client"]
