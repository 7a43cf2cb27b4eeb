"""An OpenAI-compatible chat-completions server for the tests.

It runs on a free loopback port in a thread of its own (so a test that blocks while
starting a process doesn't stall it), answers POST /v1/chat/completions as JSON or, with
`"stream": true`, as server-sent events, and records every request body. The answer is
deterministic: `reply(request)` — by default "echo: <last user message>". A test can
make it fail (HTTP 500) or stall (sleep longer than the bot's timeout):

    with FakeOpenAI() as fake:
        env = {"OPENAI_BASE_URL": fake.base_url, "OPENAI_API_KEY": "test"}
        ...
        fake.mode = "fail"
        assert fake.requests[-1]["messages"][0]["role"] == "system"

Several bots can share one server and behave apart, by the model each asks for:
`modes["m2"] = "stall"` stalls only requests for model m2, `chunk_delays["m3"]` slows
only m3's streams, and `keys["m4"] = "k"` answers 401 (the SDK's AuthenticationError)
to a request for m4 without that API key.

Run it by hand with `python -m tests.fake_openai --port 8765`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from aiohttp import web

from tests.support import free_port

Mode = Literal["ok", "fail", "stall"]


def echo_reply(body: dict[str, Any]) -> str:
    users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
    return f"echo: {users[-1] if users else ''}"


class FakeOpenAI:
    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port or free_port()
        self.mode: Mode = "ok"
        self.stall_seconds = 60.0
        self.chunk_delay = 0.0  # seconds between streamed chunks
        self.chunk_words = 1  # words per streamed chunk
        self.reply: Callable[[dict[str, Any]], str] = echo_reply
        self.modes: dict[str, Mode] = {}  # by model: overrides `mode`
        self.chunk_delays: dict[str, float] = {}  # by model: overrides `chunk_delay`
        self.keys: dict[str, str] = {}  # by model: the API key it wants
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop: asyncio.Event | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def received(self, model: str | None = None) -> list[dict[str, Any]]:
        """A copy of every request body so far (for `model` only, when given)."""
        with self._lock:
            return [body for body in self.requests if model is None or body.get("model") == model]

    def system_prompts(self, model: str | None = None) -> list[str]:
        return [m["content"] for body in self.received(model) for m in body["messages"][:1] if m.get("role") == "system"]

    # --- the HTTP side -------------------------------------------------------------

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        with self._lock:
            self.requests.append(body)
        model = body.get("model", "fake")
        wanted_key = self.keys.get(model)
        if wanted_key is not None and request.headers.get("Authorization") != f"Bearer {wanted_key}":
            error = {"message": "Incorrect API key provided.", "type": "invalid_request_error", "code": "invalid_api_key"}
            return web.json_response({"error": error}, status=401)
        mode = self.modes.get(model, self.mode)
        if mode == "fail":
            return web.json_response({"error": {"message": "the fake provider was told to fail", "type": "server_error"}}, status=500)
        if mode == "stall":
            await asyncio.sleep(self.stall_seconds)
        text = self.reply(body)
        if body.get("stream"):
            return await self._stream(request, text, model)
        return web.json_response(
            {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )

    async def _stream(self, request: web.Request, text: str, model: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        words = text.split(" ")
        pieces = [" ".join(words[i : i + self.chunk_words]) for i in range(0, len(words), self.chunk_words)]
        pieces = [p + (" " if i < len(pieces) - 1 else "") for i, p in enumerate(pieces)]
        for i, piece in enumerate([{"role": "assistant", "content": ""}] + [{"content": p} for p in pieces]):
            chunk = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": piece, "finish_reason": None}],
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            delay = self.chunk_delays.get(model, self.chunk_delay)
            if i and delay:
                await asyncio.sleep(delay)
        final = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
                 "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}  # fmt: skip
        await response.write(f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n".encode())
        await response.write_eof()
        return response

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        return app

    # --- running in a thread -------------------------------------------------------

    def start(self) -> FakeOpenAI:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="fake-openai", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake OpenAI server did not start")
        return self

    def _run(self, ready: threading.Event) -> None:
        asyncio.run(self._serve(ready))

    async def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        runner = web.AppRunner(self.app(), shutdown_timeout=0.5)
        await runner.setup()
        await web.TCPSite(runner, self.host, self.port).start()
        ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible server that echoes.")
    parser.add_argument("--port", type=int, default=8765)
    port = parser.parse_args().port
    web.run_app(FakeOpenAI(port=port).app(), host="127.0.0.1", port=port)
