"""A fake Alpaca market-data websocket server (msgpack, loopback, its own thread) for stream tests."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from typing import Any, TypeVar

import msgpack
import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

STOCK_PATHS = ("/v2/iex", "/v2/sip")
CRYPTO_PATH = "/v1beta3/crypto/us"
TRADING_PATH = "/stream"
"""The trading API's stream (trade_updates): JSON, not msgpack, and its own auth and listen."""
PATHS = (*STOCK_PATHS, CRYPTO_PATH, TRADING_PATH)

# The channels the real server echoes in its subscription reply, per endpoint.
_STOCK_CHANNELS = (
    "trades",
    "quotes",
    "bars",
    "updatedBars",
    "dailyBars",
    "statuses",
    "lulds",
    "corrections",
    "cancelErrors",
)
_CRYPTO_CHANNELS = ("trades", "quotes", "orderbooks", "bars", "updatedBars", "dailyBars")

# Malformed payloads send_malformed() can produce.
MALFORMED_KINDS = (
    "garbage",  # bytes that are not msgpack (0xc1 is never used)
    "text",  # a text frame instead of a binary one
    "not_a_list",  # a msgpack map where a list of messages is expected
    "missing_field",  # a bar without its close
    "string_ts",  # `t` as an RFC 3339 string instead of a msgpack Timestamp
    "bad_ts",  # `t` as a string that is no time at all
    "bad_number",  # a price that is a string
)

T = TypeVar("T")


@dataclass
class AuthAttempt:
    path: str
    key: str
    secret: str
    accepted: bool


@dataclass
class _Conn:
    ws: ServerConnection
    path: str
    authenticated: bool = False
    muted: bool = False
    subs: dict[str, set[str]] = field(default_factory=dict)

    def subscribed(self, channel: str, symbol: str) -> bool:
        chosen = self.subs.get(channel, set())
        return symbol in chosen or "*" in chosen


def bar_message(
    symbol: str,
    ts: datetime,
    o: float,
    h: float,
    l: float,  # noqa: E741 - Alpaca's own field name
    c: float,
    v: float,
    *,
    n: int = 10,
    vw: float | None = None,
    updated: bool = False,
) -> dict[str, Any]:
    """One bar as Alpaca streams it: `t` is a msgpack Timestamp of the bar's start."""
    if ts.tzinfo is None:
        raise ValueError("bar timestamps must be timezone-aware")
    return {
        "T": "u" if updated else "b",
        "S": symbol,
        "o": o,
        "h": h,
        "l": l,
        "c": c,
        "v": v,
        "t": msgpack.Timestamp.from_datetime(ts),
        "n": n,
        "vw": vw if vw is not None else (h + l + c) / 3,
    }


def bar_messages(frame: Any) -> list[dict[str, Any]]:
    """bar_message for every row of a canonical bar frame (one minute's bars, say), in order."""
    return [
        bar_message(
            bar["symbol"],
            bar["ts"],
            bar["open"],
            bar["high"],
            bar["low"],
            bar["close"],
            bar["volume"],
            n=bar["trade_count"],
            vw=bar["vwap"],
        )
        for bar in frame.iter_rows(named=True)
    ]


class FakeAlpacaStreamServer:
    """Speaks Alpaca's market-data stream protocol on ws://127.0.0.1:<port>/v2/iex, /v2/sip, /v1beta3/crypto/us.

    Behaviour switches (set them from the test thread at any time): `reject_auth`
    (every auth gets 402), `set_limit_exceeded()` (auth gets 406 and the socket is
    closed), `fail_next_handshakes(n)` (HTTP 503 before the websocket opens).
    """

    def __init__(self, key: str = "test-key-id", secret: str = "test-secret-key") -> None:
        self.key = key
        self.secret = secret
        self.reject_auth = False
        self._limit_remaining: int | None = 0  # None: always answer 406
        self._fail_handshakes = 0
        self._lock = threading.Lock()
        self._conns: list[_Conn] = []
        self._auth_attempts: list[AuthAttempt] = []
        self._subscriptions: list[tuple[str, dict[str, Any]]] = []
        self._listens: list[dict[str, Any]] = []
        self._paths: list[str] = []
        self._refused = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fake-alpaca-ws", daemon=True
        )
        self._server: Server | None = None
        self.port = 0

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> FakeAlpacaStreamServer:
        self._thread.start()
        self._server = self._call(self._start())
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _start(self) -> Server:
        return await serve(
            self._handle,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            ping_interval=None,
            close_timeout=1,
        )

    def close(self) -> None:
        if self._server is not None:
            server = self._server
            self._server = None

            async def shut() -> None:
                server.close()
                await server.wait_closed()

            self._call(shut(), timeout=10)
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        if not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> FakeAlpacaStreamServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def url(self, path: str = "/v2/iex") -> str:
        """The full websocket URL of one endpoint, as alpaca-py's url_override wants it."""
        return f"ws://127.0.0.1:{self.port}{path}"

    @property
    def stock_url(self) -> str:
        return self.url("/v2/iex")

    @property
    def crypto_url(self) -> str:
        return self.url(CRYPTO_PATH)

    # ---- behaviour switches ----------------------------------------------------------

    def set_limit_exceeded(self, times: int | None = None) -> None:
        """Answer the next `times` auths (every auth when None) with 406 connection limit exceeded."""
        with self._lock:
            self._limit_remaining = times

    def clear_limit_exceeded(self) -> None:
        self.set_limit_exceeded(0)

    def fail_next_handshakes(self, n: int) -> None:
        """Refuse the next n websocket handshakes with HTTP 503 (the connect itself fails)."""
        with self._lock:
            self._fail_handshakes = n

    # ---- records ---------------------------------------------------------------------

    @property
    def auth_attempts(self) -> list[AuthAttempt]:
        with self._lock:
            return list(self._auth_attempts)

    @property
    def subscriptions(self) -> list[tuple[str, dict[str, Any]]]:
        """Every subscribe action received, as (path, message) in arrival order."""
        with self._lock:
            return list(self._subscriptions)

    @property
    def listens(self) -> list[dict[str, Any]]:
        """Every `listen` action received on the trading stream, in arrival order."""
        with self._lock:
            return list(self._listens)

    @property
    def connection_count(self) -> int:
        """Websocket connections opened so far (refused handshakes not counted)."""
        with self._lock:
            return len(self._paths)

    @property
    def connection_paths(self) -> list[str]:
        with self._lock:
            return list(self._paths)

    @property
    def refused_handshakes(self) -> int:
        with self._lock:
            return self._refused

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._conns)

    def is_subscribed(self, symbol: str, path: str | None = None, channel: str = "bars") -> bool:
        """True when a live, authenticated, not-silenced connection receives `symbol` bars."""
        with self._lock:
            return any(
                c.authenticated
                and not c.muted
                and (path is None or c.path == path)
                and c.subscribed(channel, symbol)
                for c in self._conns
            )

    def wait_subscribed(
        self,
        symbol: str,
        path: str | None = None,
        *,
        min_connections: int = 1,
        timeout: float = 5.0,
    ) -> None:
        """Wait until `symbol` is subscribed on a live connection, the `min_connections`-th or later."""
        _wait(
            lambda: self.connection_count >= min_connections and self.is_subscribed(symbol, path),
            timeout,
            f"{symbol} subscribed on connection #{min_connections}",
        )

    # ---- pushing data ----------------------------------------------------------------

    def push_bar(
        self,
        symbol: str,
        ts: datetime,
        o: float,
        h: float,
        l: float,  # noqa: E741
        c: float,
        v: float,
        *,
        n: int = 10,
        vw: float | None = None,
        updated: bool = False,
    ) -> int:
        """Send one bar to every connection subscribed to it; returns how many got it."""
        msg = bar_message(symbol, ts, o, h, l, c, v, n=n, vw=vw, updated=updated)
        channel = "updatedBars" if updated else "bars"
        return self._call(self._broadcast(msgpack.packb([msg]), symbol=symbol, channel=channel))

    def push_raw(self, messages: Any, *, path: str | None = None) -> int:
        """msgpack-encode `messages` as given (normally a list of dicts) and send it to every live connection."""
        return self._call(self._broadcast(msgpack.packb(messages), path=path))

    def push_bytes(self, frame: bytes | str, *, path: str | None = None) -> int:
        """Send a frame verbatim (bytes: binary frame, str: text frame)."""
        return self._call(self._broadcast(frame, path=path))

    def send_malformed(
        self,
        kind: str,
        *,
        symbol: str = "SPY",
        ts: datetime | None = None,
        path: str | None = None,
    ) -> int:
        """Send one malformed frame of the given kind (see MALFORMED_KINDS)."""
        if kind == "garbage":
            return self.push_bytes(b"\xc1\x00\xff\xfe", path=path)
        if kind == "text":
            return self.push_bytes("this is not msgpack", path=path)
        if kind == "not_a_list":
            return self.push_raw({"T": "b", "S": symbol}, path=path)
        if ts is None:
            raise ValueError(f"send_malformed({kind!r}) needs ts")
        bar = bar_message(symbol, ts, 10.0, 11.0, 9.0, 10.5, 100.0)
        if kind == "missing_field":
            del bar["c"]
        elif kind == "string_ts":
            bar["t"] = ts.strftime("%Y-%m-%dT%H:%M:%SZ")
        elif kind == "bad_ts":
            bar["t"] = "yesterday"
        elif kind == "bad_number":
            bar["o"] = "ten"
        else:
            raise ValueError(
                f"unknown malformed kind {kind!r}; known: {', '.join(MALFORMED_KINDS)}"
            )
        return self.push_raw([bar], path=path)

    # ---- failures --------------------------------------------------------------------

    def drop_connections(self, *, graceful: bool = False) -> int:
        """Disconnect every open connection mid-stream: TCP abort, or a 1011 close when graceful."""

        async def drop() -> int:
            with self._lock:
                conns = list(self._conns)
            for conn in conns:
                if graceful:
                    await conn.ws.close(1011, "going away")
                else:
                    conn.ws.transport.abort()
            return len(conns)

        return self._call(drop())

    def go_silent(self, path: str | None = None) -> int:
        """Keep every open connection (of `path`, when given) open but send nothing on it and
        ignore what it sends; returns how many went silent."""
        with self._lock:
            chosen = [c for c in self._conns if path is None or c.path == path]
            for conn in chosen:
                conn.muted = True
            return len(chosen)

    # ---- server side -----------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 5.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path not in PATHS:
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        with self._lock:
            if self._fail_handshakes > 0:
                self._fail_handshakes -= 1
                self._refused += 1
                return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "try later\n")
        return None

    async def _broadcast(
        self,
        frame: bytes | str,
        *,
        symbol: str | None = None,
        channel: str = "bars",
        path: str | None = None,
    ) -> int:
        with self._lock:
            targets = [
                c
                for c in self._conns
                if c.authenticated
                and not c.muted
                and (path is None or c.path == path)
                and (symbol is None or c.subscribed(channel, symbol))
            ]
        sent = 0
        for conn in targets:
            try:
                await conn.ws.send(frame)
                sent += 1
            except ConnectionClosed:
                pass
        return sent

    async def _handle(self, ws: ServerConnection) -> None:
        path = ws.request.path.split("?", 1)[0] if ws.request is not None else ""
        conn = _Conn(ws=ws, path=path)
        with self._lock:
            self._conns.append(conn)
            self._paths.append(path)
        if path == TRADING_PATH:
            await self._handle_trading(conn)
            return
        try:
            await ws.send(msgpack.packb([{"T": "success", "msg": "connected"}]))
            # websockets reassembles fragmented messages: alpaca-py sends its subscribe
            # as a fragmented binary message and recv() yields it whole.
            async for raw in ws:
                if conn.muted:
                    continue
                reply = self._on_message(conn, raw)
                if reply is None:
                    continue
                await ws.send(msgpack.packb(reply))
                if reply[0].get("code") == 406:
                    await ws.close(1008, "connection limit exceeded")
                    return
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                self._conns.remove(conn)

    def _on_message(self, conn: _Conn, raw: bytes | str) -> list[dict[str, Any]] | None:
        try:
            msg = msgpack.unpackb(raw) if isinstance(raw, bytes) else None
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            msg = None
        if not isinstance(msg, dict):
            return [{"T": "error", "code": 400, "msg": "invalid syntax"}]
        action = msg.get("action")
        if action == "auth":
            return self._on_auth(conn, msg)
        if not conn.authenticated:
            return [{"T": "error", "code": 401, "msg": "not authenticated"}]
        if action in ("subscribe", "unsubscribe"):
            channels = _CRYPTO_CHANNELS if conn.path == CRYPTO_PATH else _STOCK_CHANNELS
            with self._lock:
                if action == "subscribe":
                    self._subscriptions.append((conn.path, dict(msg)))
                for channel in channels:
                    symbols = msg.get(channel) or []
                    chosen = conn.subs.setdefault(channel, set())
                    if action == "subscribe":
                        chosen.update(symbols)
                    else:
                        chosen.difference_update(symbols)
                reply: dict[str, Any] = {"T": "subscription"}
                reply.update({ch: sorted(conn.subs.get(ch, set())) for ch in channels})
            return [reply]
        return [{"T": "error", "code": 400, "msg": "invalid syntax"}]

    async def _handle_trading(self, conn: _Conn) -> None:
        """Alpaca's trading stream: JSON frames; `authenticate` with key_id/secret_key, then
        `listen` to trade_updates (the only stream it serves)."""
        ws = conn.ws
        try:
            async for raw in ws:
                if conn.muted:
                    continue
                try:
                    msg = json.loads(raw)
                except ValueError:
                    msg = None
                if not isinstance(msg, dict):
                    await ws.send(json.dumps({"stream": "error", "data": {"msg": "bad frame"}}))
                    continue
                data = msg.get("data") or {}
                if msg.get("action") in ("authenticate", "auth"):
                    key, secret = str(data.get("key_id", "")), str(data.get("secret_key", ""))
                    with self._lock:
                        ok = not self.reject_auth and (key, secret) == (self.key, self.secret)
                        self._auth_attempts.append(AuthAttempt(conn.path, key, secret, ok))
                        conn.authenticated = ok
                    status = "authorized" if ok else "unauthorized"
                    await ws.send(
                        json.dumps(
                            {
                                "stream": "authorization",
                                "data": {"status": status, "action": "authenticate"},
                            }
                        )
                    )
                    if not ok:
                        await ws.close(1008, "unauthorized")
                        return
                elif msg.get("action") == "listen" and conn.authenticated:
                    streams = [s for s in data.get("streams", []) if s == "trade_updates"]
                    with self._lock:
                        self._listens.append(dict(msg))
                        conn.subs["trade_updates"] = {"*"} if streams else set()
                    await ws.send(json.dumps({"stream": "listening", "data": {"streams": streams}}))
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                self._conns.remove(conn)

    def listening_for_trade_updates(self) -> int:
        """Open, authenticated trading-stream connections that listen to trade_updates."""
        with self._lock:
            return sum(
                1
                for c in self._conns
                if c.path == TRADING_PATH and c.authenticated and c.subscribed("trade_updates", "*")
            )

    def push_trade_update(
        self, event: str, order: dict[str, Any], *, wait: bool = True, **fields: Any
    ) -> int | None:
        """Send one trade_updates event (`fill`, `partial_fill`, `new`, `canceled`...) about
        `order` (the REST order object) to every listening connection; `fields` are the
        event's own (price, qty, timestamp, execution_id, position_qty). `wait=False` queues
        it without waiting (from the fake REST server's own thread)."""
        frame = json.dumps(
            {
                "stream": "trade_updates",
                "data": {"event": event, "order": dict(order), **fields},
            }
        )
        coro = self._broadcast(frame, symbol="*", channel="trade_updates", path=TRADING_PATH)
        if wait:
            return self._call(coro)
        asyncio.run_coroutine_threadsafe(coro, self._loop)
        return None

    def _on_auth(self, conn: _Conn, msg: dict[str, Any]) -> list[dict[str, Any]]:
        key, secret = str(msg.get("key", "")), str(msg.get("secret", ""))
        with self._lock:
            if conn.authenticated:
                return [{"T": "error", "code": 403, "msg": "already authenticated"}]
            limited = self._limit_remaining is None or self._limit_remaining > 0
            ok = not limited and not self.reject_auth and (key, secret) == (self.key, self.secret)
            self._auth_attempts.append(AuthAttempt(conn.path, key, secret, ok))
            if limited:
                if self._limit_remaining is not None:
                    self._limit_remaining -= 1
                return [{"T": "error", "code": 406, "msg": "connection limit exceeded"}]
            if not ok:
                return [{"T": "error", "code": 402, "msg": "auth failed"}]
            conn.authenticated = True
        return [{"T": "success", "msg": "authenticated"}]


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def fake_alpaca_stream() -> Iterator[FakeAlpacaStreamServer]:
    """A started fake market-data stream server; closed after the test."""
    with FakeAlpacaStreamServer() as server:
        yield server
