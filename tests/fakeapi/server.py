"""A real local HTTP server speaking enough of the OpenAI and Anthropic APIs for their official SDKs.

Typical use::

    with FakeAPIServer(faults=Faults(rate_limit=0.2)) as server:
        client = openai.OpenAI(base_url=server.openai_base_url, api_key=server.api_key)
        ...
        assert max(server.stats.paid_by_key.values()) == 1   # exactly-once billing

The server runs its own asyncio loop (aiohttp.web) on a background thread, bound to
127.0.0.1 on a free port. Knobs (``faults``, ``latency_s``, ``answer``, ``batch_polls_to_complete``,
``quota_exhausted``, ``expire_next_batches``, ``fail_next_batches``, ``batch_request_error_rate``) can
be flipped at any time from any thread. Control endpoints for out-of-process use (see ``__main__``):
``GET /_stats``, ``POST /_reset`` (clears stats), ``GET|POST /_config`` (JSON knobs, ``faults``
may be partial), ``GET /_health``. They need no API key and are not counted in stats.

Semantics worth knowing:

* Billing: a sync completion is paid when a valid 200 answer is sent; a batch line when its batch
  finishes (on the retrieve that moves it to completed/expired/ended) with a succeeded, valid
  result. Faulted answers (429/500/malformed/out-of-range) are never paid. Keys come from
  :func:`request_key`, so the same request answered sync *and* via a batch counts twice.
* ``timeout`` fault on a completion: the server hangs ``hang_s`` first; a client that gives up
  disconnects, which cancels the handler, so nothing is paid. With ``Faults.control_plane`` the
  files/batches endpoints do the work first and then hang (the batch exists, the reply is lost).
* ``latency_s`` applies to sync completions only. ``quota_exhausted`` blocks completions and
  batch creation (OpenAI 429 ``insufficient_quota``; Anthropic 402 ``billing_error``).
* Batches advance only when retrieved: ``batch_polls_to_complete`` retrieves finish one.
  ``expire_next_batches`` answers the first half of the lines and expires the rest;
  ``fail_next_batches`` fails an OpenAI batch at validation, and errors every line of an
  Anthropic one (which has no failed state).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Generic, TypeVar, overload

from aiohttp import web

from . import common
from .answers import AnswerFn, AnswerRequest, default_answer
from .anthropic_routes import AnthropicRoutes
from .common import APIFailure
from .openai_routes import OpenAIRoutes
from .state import Faults, Knobs, ServerState, Stats

__all__ = ["AnswerRequest", "FakeAPIServer", "Faults", "Stats", "build_app"]

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
COMPLETION_ROUTES = frozenset({"POST /v1/chat/completions", "POST /v1/messages"})


def _authorised(request: web.Request, provider: str, api_key: str) -> bool:
    if provider == "anthropic" and request.headers.get("x-api-key") == api_key:
        return True
    return request.headers.get("Authorization") == f"Bearer {api_key}"


def _api_middleware(state: ServerState) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_"):
            return await handler(request)
        provider = common.provider_for(request.path)
        resource = request.match_info.route.resource
        label = f"{request.method} {resource.canonical if resource is not None else request.path}"
        state.stats.record_request(label)
        if not _authorised(request, provider, state.api_key):
            return common.unauthorised(provider)
        faults = state.knobs().faults
        fault = None
        if faults.control_plane and resource is not None and label not in COMPLETION_ROUTES:
            fault = faults.roll(label, state.next_attempt(label))
            if fault == "rate_limit":
                state.stats.record_fault(fault)
                return common.rate_limited(provider, faults.retry_after_s)
            if fault == "server_error":
                state.stats.record_fault(fault)
                return common.server_error(provider)
        try:
            response = await handler(request)
        except APIFailure as failure:
            response = failure.response
        except web.HTTPException as exc:  # router-level 404/405 etc.
            if exc.status < 400:
                raise
            type_ = "invalid_request_error" if provider == "openai" or exc.status != 404 else "not_found_error"
            response = common.error_response(
                provider, exc.status, f"{exc.reason}: {request.method} {request.path}", type_=type_
            )
        if fault == "timeout":  # the work is done (e.g. the batch exists) but the reply comes too late
            state.stats.record_fault(fault)
            if await state.hang(faults.hang_s):
                return common.service_stopping(provider)
        return response

    return middleware


class _ControlRoutes:
    def __init__(self, state: ServerState) -> None:
        self.state = state

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/_health", self.health),
            web.get("/_stats", self.stats),
            web.post("/_reset", self.reset),
            web.get("/_config", self.config),
            web.post("/_config", self.configure),
        ]

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.stats.as_dict())

    async def reset(self, request: web.Request) -> web.Response:
        self.state.stats.reset()
        return web.json_response({"ok": True})

    async def config(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.knobs().public())

    async def configure(self, request: web.Request) -> web.Response:
        try:
            changes = json.loads(await request.text() or "{}")
            if not isinstance(changes, dict) or "answer" in changes:
                raise ValueError("expected a JSON object of knobs (the answer function cannot be set remotely)")
            self.state.update(**changes)
        except (ValueError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(self.state.knobs().public())


def build_app(state: ServerState) -> web.Application:
    """The aiohttp application (exposed for embedding in an existing loop, e.g. aiohttp's test client)."""
    app = web.Application(middlewares=[_api_middleware(state)], client_max_size=1024**3)
    app.add_routes(OpenAIRoutes(state).routes())
    app.add_routes(AnthropicRoutes(state).routes())
    app.add_routes(_ControlRoutes(state).routes())
    return app


class _Knob(Generic[T]):
    """A FakeAPIServer attribute backed by a thread-safe runtime knob."""

    name: str

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, objtype: type | None = None) -> _Knob[T]: ...
    @overload
    def __get__(self, obj: FakeAPIServer, objtype: type | None = None) -> T: ...
    def __get__(self, obj: FakeAPIServer | None, objtype: type | None = None) -> T | _Knob[T]:
        if obj is None:
            return self
        value: T = getattr(obj._state.knobs(), self.name)
        return value

    def __set__(self, obj: FakeAPIServer, value: T) -> None:
        obj._state.update(**{self.name: value})


class FakeAPIServer:
    """Fake OpenAI + Anthropic API on 127.0.0.1. Use as a context manager or call start()/stop()."""

    faults: _Knob[Faults] = _Knob()
    latency_s: _Knob[float] = _Knob()
    answer: _Knob[AnswerFn] = _Knob()
    batch_polls_to_complete: _Knob[int] = _Knob()
    quota_exhausted: _Knob[bool] = _Knob()
    expire_next_batches: _Knob[int] = _Knob()
    fail_next_batches: _Knob[int] = _Knob()
    batch_request_error_rate: _Knob[float] = _Knob()

    def __init__(
        self,
        *,
        latency_s: float = 0.0,
        faults: Faults | None = None,
        api_key: str = "test-key",
        answer: AnswerFn | None = None,
        batch_polls_to_complete: int = 1,
        quota_exhausted: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        knobs = Knobs(
            faults=faults or Faults(),
            latency_s=latency_s,
            answer=answer or default_answer,
            batch_polls_to_complete=batch_polls_to_complete,
            quota_exhausted=quota_exhausted,
        )
        self._state = ServerState(knobs, api_key)
        self.host = host
        self._requested_port = port
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._startup_error: BaseException | None = None

    # ---------------------------------------------------------------------------------- public API
    @property
    def api_key(self) -> str:
        return self._state.api_key

    @property
    def stats(self) -> Stats:
        """Live, thread-safe billing/traffic counters."""
        return self._state.stats

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeAPIServer is not running; call start() first")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.url

    def env(self) -> dict[str, str]:
        """Environment variables pointing both SDKs at this server."""
        return {
            "OPENAI_BASE_URL": self.openai_base_url,
            "ANTHROPIC_BASE_URL": self.anthropic_base_url,
            "OPENAI_API_KEY": self.api_key,
            "ANTHROPIC_API_KEY": self.api_key,
        }

    def configure(self, **knobs: Any) -> None:
        """Change several knobs atomically (same names as the attributes; ``faults`` may be a dict)."""
        self._state.update(**knobs)

    def config(self) -> dict[str, Any]:
        """The current knobs as JSON-able data (what ``GET /_config`` returns)."""
        return self._state.knobs().public()

    def reset_stats(self) -> None:
        self._state.stats.reset()

    # ----------------------------------------------------------------------------------- lifecycle
    def start(self) -> FakeAPIServer:
        """Bind and serve from a background thread; returns once the port accepts connections."""
        if self._thread is not None:
            raise RuntimeError("FakeAPIServer is already running")
        ready = threading.Event()
        self._startup_error = None
        self._thread = threading.Thread(target=self._serve, args=(ready,), name="fakeapi-server", daemon=True)
        self._thread.start()
        ready.wait()
        if self._startup_error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError(f"FakeAPIServer failed to start: {self._startup_error!r}") from self._startup_error
        return self

    def stop(self) -> None:
        """Stop serving. In-flight hangs (timeout faults, latency) end at once with a 503."""
        thread, loop = self._thread, self._loop
        if thread is None:
            return
        if loop is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._astop(), loop).result(timeout=30)
            finally:
                loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        self._thread = self._loop = None
        self._port = None

    def __enter__(self) -> FakeAPIServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "stopped"
        return f"<FakeAPIServer {where} {self.stats!r}>"

    # ------------------------------------------------------------------------------------ internals
    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            try:
                loop.run_until_complete(self._astart())
            except BaseException as exc:
                self._startup_error = exc
                return
            finally:
                if self._startup_error is None:
                    self._loop = loop
                ready.set()
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _astart(self) -> None:
        self._state.stopping = asyncio.Event()
        runner = web.AppRunner(
            build_app(self._state),
            handle_signals=False,
            access_log=None,
            shutdown_timeout=1.0,
            handler_cancellation=True,
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._requested_port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])

    async def _astop(self) -> None:
        if self._state.stopping is not None:
            self._state.stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
