"""A fake Reddit API (OAuth token + /r/{sub}/new listings) on 127.0.0.1 for the real praw client."""

from __future__ import annotations

import base64
import itertools
import json
import re
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

CLIENT_ID = "fake-client-id"
CLIENT_SECRET = "fake-client-secret-Zq81xK"  # tests assert it never leaks into messages
TOKEN_PATH = "/api/v1/access_token"
PAGE_CAP = 100  # Reddit serves at most 100 children per listing page
DEFAULT_PAGE = 25  # and 25 when no limit is asked for

_LISTING_PATH = re.compile(r"^/r/(?P<sub>[^/]+)/new(?:\.json)?/?$")
_COMMENTS_PATH = re.compile(r"^/comments/(?P<id>[a-z0-9]+)(?:/[^/]*)?(?:\.json)?/?$")


@dataclass(frozen=True)
class RecordedRequest:
    """One request the fake received (the Authorization header is not kept)."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    at: float  # time.monotonic() when it arrived


@dataclass
class Fault:
    """What the next matching request(s) get instead of the normal answer."""

    status: int | None = None  # None: the normal answer (possibly after `delay`)
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    delay: float = 0.0
    path: str | None = None  # only requests whose path starts with this; None: any
    query: dict[str, str] | None = None  # only requests whose query has these items
    remaining: int | None = 1  # None: every matching request, for good

    def matches(self, path: str, query: dict[str, str]) -> bool:
        return (
            (self.remaining is None or self.remaining > 0)
            and (self.path is None or path.startswith(self.path))
            and (self.query is None or self.query.items() <= query.items())
        )


def make_post(
    post_id: str,
    created_utc: float | datetime,
    *,
    subreddit: str = "stocks",
    title: str | None = None,
    selftext: str = "",
    author: str | None = "some_user",
    score: int = 1,
    num_comments: int = 0,
    **extra: Any,
) -> dict[str, Any]:
    """The `data` of one t3 child as Reddit sends it (extra keys override or add fields)."""
    ts = created_utc.timestamp() if isinstance(created_utc, datetime) else float(created_utc)
    permalink = f"/r/{subreddit}/comments/{post_id}/post_{post_id}/"
    data: dict[str, Any] = {
        "id": post_id,
        "name": f"t3_{post_id}",
        "subreddit": subreddit,
        "title": title if title is not None else f"post {post_id}",
        "selftext": selftext,
        "author": author,
        "score": score,
        "num_comments": num_comments,
        "created_utc": ts,
        "created": ts,
        "permalink": permalink,
        "url": f"https://www.reddit.com{permalink}",
        "is_self": True,
    }
    data.update(extra)
    return data


class FakeReddit:
    """Holds posts per subreddit, issues bearer tokens, pages `/r/{sub}/new`, injects faults."""

    def __init__(self, client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_lifetime = 3600
        # Defaults that make prawcore's pacing sleep 0 s; tests change them to see it pace.
        self.ratelimit: dict[str, str] = {"remaining": "995.0", "used": "5", "reset": "0"}
        self.requests: list[RecordedRequest] = []
        self._subs: dict[str, list[Any]] = {}  # lower-case name -> children, as added
        self._status: dict[str, tuple[int, dict[str, Any]]] = {}  # lower-case name -> error
        self._comments: dict[str, list[dict[str, Any]]] = {}
        self._tokens: set[str] = set()
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeReddit:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeReddit:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- content ------------------------------------------------------------------------
    def create_subreddit(self, name: str) -> None:
        """An existing subreddit with no posts (its listing is empty)."""
        with self._lock:
            self._subs.setdefault(name.lower(), [])

    def add_posts(self, subreddit: str, posts: Iterable[dict[str, Any]]) -> None:
        """Add t3 `data` dicts (see make_post) to a subreddit; listings serve newest first."""
        with self._lock:
            self._subs.setdefault(subreddit.lower(), []).extend(
                {"kind": "t3", "data": p} for p in posts
            )

    def add_post(
        self, subreddit: str, post_id: str, created_utc: float | datetime, **kw: Any
    ) -> dict[str, Any]:
        post = make_post(post_id, created_utc, subreddit=subreddit, **kw)
        self.add_posts(subreddit, [post])
        return post

    def add_raw_child(self, subreddit: str, child: Any) -> None:
        """A listing child exactly as given (malformed ones included); it sorts as the newest."""
        with self._lock:
            self._subs.setdefault(subreddit.lower(), []).append(child)

    def add_comment(self, post_id: str, body: str, author: str = "commenter") -> None:
        with self._lock:
            n = len(self._comments.setdefault(post_id, []))
            self._comments[post_id].append(
                {
                    "id": f"c{post_id}{n}",
                    "name": f"t1_c{post_id}{n}",
                    "parent_id": f"t3_{post_id}",
                    "link_id": f"t3_{post_id}",
                    "body": body,
                    "author": author,
                    "score": 1,
                    "created_utc": time.time(),
                    "replies": "",
                }
            )

    def set_subreddit_status(self, name: str, status: int, reason: str | None = None) -> None:
        """Every listing request for this subreddit answers `status` (403 private, 404 banned)."""
        body: dict[str, Any] = {"message": _REASON.get(status, "Error"), "error": status}
        if reason:
            body["reason"] = reason
        with self._lock:
            self._status[name.lower()] = (status, body)

    # -- faults -------------------------------------------------------------------------
    def inject(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def fail_next(
        self,
        status: int,
        count: int | None = 1,
        *,
        path: str | None = None,
        retry_after: float | None = None,
        www_authenticate: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """The next `count` matching requests (None: all of them) get `status`."""
        extra = dict(headers or {})
        if retry_after is not None:
            extra["Retry-After"] = f"{retry_after:g}"
        if www_authenticate is not None:
            extra["WWW-Authenticate"] = www_authenticate
        self.inject(Fault(status=status, headers=extra, path=path, remaining=count))

    def delay_next(self, seconds: float, count: int | None = 1, *, path: str | None = None) -> None:
        """The next `count` matching requests are answered only after `seconds`."""
        self.inject(Fault(delay=seconds, path=path, remaining=count))

    def malformed_next(self, count: int | None = 1, *, path: str | None = None) -> None:
        """The next `count` matching requests get 200 with a body that is not JSON."""
        self.inject(
            Fault(
                status=200,
                body=b'{"kind": "Listing", "data": {"children": [',
                path=path,
                remaining=count,
            )
        )

    def expire_tokens(self) -> None:
        """Every token issued so far stops working (401 invalid_token, as Reddit does)."""
        with self._lock:
            self._tokens.clear()

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    # -- what happened ------------------------------------------------------------------
    def listing_requests(self, subreddit: str) -> list[RecordedRequest]:
        prefix = f"/r/{subreddit.lower()}/new"
        return [r for r in self.requests if r.path.lower().startswith(prefix)]

    @property
    def token_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path == TOKEN_PATH]

    # -- serving (called from handler threads) ------------------------------------------
    def _take_fault(self, path: str, query: dict[str, str]) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(path, query):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    return fault
        return None

    def _answer(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        fault = self._take_fault(path, query)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and fault.status is not None:
            payload = fault.body
            if payload is None:
                payload = _json(
                    {"message": _REASON.get(fault.status, "Error"), "error": fault.status}
                )
            return fault.status, {**self._ratelimit_headers(), **fault.headers}, payload
        if path == TOKEN_PATH:
            return self._token(method, headers, body)
        if not self._token_ok(headers.get("authorization", "")):
            return (
                401,
                {"WWW-Authenticate": 'Bearer realm="reddit", error="invalid_token"'},
                _json({"message": "Unauthorized", "error": 401}),
            )
        if match := _LISTING_PATH.match(path):
            return self._listing(match["sub"], query)
        if match := _COMMENTS_PATH.match(path):
            return self._comments_of(match["id"])
        return 404, self._ratelimit_headers(), _json({"message": "Not Found", "error": 404})

    def _token(
        self, method: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if method != "POST" or headers.get("authorization", "") != f"Basic {expected}":
            return 401, {}, _json({"message": "Unauthorized", "error": 401})
        form = parse_qs(body.decode())
        if form.get("grant_type") != ["client_credentials"]:
            return 200, {}, _json({"error": "unsupported_grant_type"})
        token = secrets.token_hex(8)
        with self._lock:
            self._tokens.add(token)
        return (
            200,
            {},
            _json(
                {
                    "access_token": token,
                    "token_type": "bearer",
                    "expires_in": self.token_lifetime,
                    "scope": "*",
                }
            ),
        )

    def _token_ok(self, authorization: str) -> bool:
        scheme, _, token = authorization.partition(" ")
        with self._lock:
            return scheme.lower() == "bearer" and token in self._tokens

    def _ratelimit_headers(self) -> dict[str, str]:
        return {f"x-ratelimit-{k}": v for k, v in self.ratelimit.items()}

    def _listing(self, sub: str, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        key = sub.lower()
        with self._lock:
            status = self._status.get(key)
            children = list(self._subs.get(key, [])) if key in self._subs else None
        if status is not None:
            return status[0], self._ratelimit_headers(), _json(status[1])
        if children is None:
            return 404, self._ratelimit_headers(), _json({"message": "Not Found", "error": 404})
        # Newest first, as /new serves; children that cannot be dated (malformed) sort first.
        ordered = sorted(enumerate(children), key=lambda ic: (_created(ic[1]), ic[0]), reverse=True)
        newest_first = [c for _, c in ordered]
        start = 0
        if after := query.get("after"):
            names = [_name(c) for c in newest_first]
            start = names.index(after) + 1 if after in names else len(newest_first)
        try:
            limit = max(1, min(PAGE_CAP, int(query.get("limit", DEFAULT_PAGE))))
        except ValueError:
            limit = DEFAULT_PAGE
        page = newest_first[start : start + limit]
        more = start + limit < len(newest_first)
        data = {
            "after": _name(page[-1]) if page and more else None,
            "before": None,
            "dist": len(page),
            "modhash": None,
            "geo_filter": "",
            "children": page,
        }
        return 200, self._ratelimit_headers(), _json({"kind": "Listing", "data": data})

    def _comments_of(self, post_id: str) -> tuple[int, dict[str, str], bytes]:
        with self._lock:
            found = [
                c
                for c in itertools.chain.from_iterable(self._subs.values())
                if isinstance(c, dict)
                and isinstance(c.get("data"), dict)
                and c["data"].get("id") == post_id
            ]
            comments = [{"kind": "t1", "data": c} for c in self._comments.get(post_id, [])]
        if not found:
            return 404, self._ratelimit_headers(), _json({"message": "Not Found", "error": 404})
        listing = [
            {"kind": "Listing", "data": {"after": None, "before": None, "children": found[:1]}},
            {"kind": "Listing", "data": {"after": None, "before": None, "children": comments}},
        ]
        return 200, self._ratelimit_headers(), _json(listing)

    def _record(
        self, method: str, path: str, query: dict[str, str], status: int, at: float
    ) -> None:
        with self._lock:
            self.requests.append(RecordedRequest(method, path, query, status, at))


_REASON = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}


def _json(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _created(child: Any) -> float:
    try:
        return float(child["data"]["created_utc"])
    except (KeyError, TypeError, ValueError):
        return float("inf")


def _name(child: Any) -> str | None:
    try:
        data = child["data"]
        return str(data.get("name") or f"t3_{data['id']}")
    except (KeyError, TypeError, AttributeError):
        return None


def _handler_for(fake: FakeReddit) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "FakeReddit/1.0"

        def _serve(self) -> None:
            at = time.monotonic()
            split = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(split.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra, payload = fake._answer(self.command, split.path, query, headers, body)
            fake._record(self.command, split.path, query, status, at)
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(payload)))
                for name, value in extra.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a delay fault longer than its timeout)

        do_GET = _serve
        do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture(name="fake_reddit")
def fake_reddit_fixture() -> Iterator[FakeReddit]:
    """A started FakeReddit on 127.0.0.1 (credentials CLIENT_ID / CLIENT_SECRET), stopped after."""
    with FakeReddit() as fake:
        yield fake
