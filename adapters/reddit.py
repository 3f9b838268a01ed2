"""PostSource over the real Reddit API (praw, read-only): new posts per subreddit, newest last."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import praw
import requests
from praw.exceptions import PRAWException
from prawcore.exceptions import (
    BadJSON,
    Forbidden,
    InsufficientScope,
    InvalidToken,
    NotFound,
    OAuthException,
    PrawcoreException,
    Redirect,
    RequestException,
    ResponseException,
    ServerError,
    TooManyRequests,
    UnavailableForLegalReasons,
)
from prawcore.requestor import Requestor
from prawcore.sessions import FiniteRetryStrategy, Session

from adapters.clock import SystemClock
from adapters.protocols import Clock
from core.posts import Post

log = logging.getLogger(__name__)

REDDIT_SOURCE = "reddit"
MAX_BODY_CHARS = 40_000  # Reddit's own self-text limit; anything longer is junk or abuse
PERMALINK_BASE = "https://www.reddit.com"
DEFAULT_TIMEOUT = 16.0  # seconds per HTTP request, prawcore's own default
DELETED_TEXTS = frozenset({"[deleted]", "[removed]"})
DELETED_TITLES = DELETED_TEXTS | {"[deleted by user]", "[removed by reddit]"}
# Reddit's rule for names: 3-21 of letters, digits and underscores (a few old ones have 2).
_SUBREDDIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]{1,20}")
_TOKEN_PATH = "/api/v1/access_token"

CREDENTIALS_HELP = (
    "check REDDIT_CLIENT_ID and REDDIT_CLIENT_SECRET (the id and secret of a 'script' app at "
    "https://www.reddit.com/prefs/apps) and set a descriptive REDDIT_USER_AGENT such as "
    "'tradingml/0.1 by u/yourname'"
)


class RedditAuthError(ValueError):
    """Reddit refused the app's credentials. A ValueError: it is configuration, so retrying
    (the flow retries anything but bad input) cannot help."""


class RedditFetchError(RuntimeError):
    """Reddit could not be read: server errors, timeouts or malformed replies, after retries."""


class RedditRateLimitError(RedditFetchError):
    """Reddit kept answering 429 Too Many Requests after the waits it asked for."""


class _SubredditUnavailable(Exception):
    """A subreddit that is private, banned or nonexistent: skipped, not a failure."""


class _RawChild:
    """What the t3 parser makes of a listing child: its raw JSON, unvalidated.

    praw would build a Submission, which raises for a child without an id (losing the whole
    page) and fetches any missing attribute over the network on access; plain data is safer.
    """

    __slots__ = ("data",)

    def __init__(self, data: object) -> None:
        self.data = data

    @classmethod
    def parse(cls, data: object, reddit: object) -> _RawChild:
        return cls(data)


class _TimeoutRequestor(Requestor):
    """prawcore passes its module-wide 16 s to every API call, ignoring Requestor(timeout=):
    this makes the timeout given here apply to all requests."""

    def request(self, *args: Any, timeout: float | None = None, **kwargs: Any) -> requests.Response:
        return super().request(*args, timeout=self.timeout, **kwargs)


def _retry_strategy(sleep: Callable[[float], None]) -> type[FiniteRetryStrategy]:
    """prawcore's own retries (5xx, timeouts, a 401 that needs a new token), waiting through
    the injected sleep instead of time.sleep, so tests do not wait 0-6 s per retry."""

    class InjectedSleepRetry(FiniteRetryStrategy):
        def sleep(self) -> None:
            seconds = self._sleep_seconds()
            if seconds is not None:
                log.debug("waiting %.2f s before prawcore's retry", seconds)
                sleep(seconds)

    return InjectedSleepRetry


class RedditPostSource:
    """New posts of subreddits through praw, read-only (an app's client credentials only).

    Per subreddit it pages /r/{name}/new (newest first) until it reaches `since` or `limit`,
    then yields all subreddits' posts merged, oldest first. A subreddit that is private,
    banned or missing, or that keeps failing, is logged, listed in `last_errors` and skipped;
    the others' posts still come. Bad credentials raise RedditAuthError at once.
    """

    name = REDDIT_SOURCE

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        user_agent: str,
        *,
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Clock | None = None,
        sleep: Callable[[float], None] | None = None,
        max_rate_limit_retries: int = 3,
        rate_limit_backoff: float = 2.0,
        max_rate_limit_wait: float = 120.0,
        requestor_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if not client_id.strip() or not client_secret.strip():
            raise RedditAuthError(f"Reddit client id or secret is empty: {CREDENTIALS_HELP}")
        if not user_agent.strip():
            raise ValueError(
                "REDDIT_USER_AGENT is empty: Reddit blocks anonymous clients; set it to "
                "something descriptive such as 'tradingml/0.1 by u/yourname'"
            )
        self.clock: Clock = clock or SystemClock()
        self._sleep = sleep if sleep is not None else self.clock.sleep
        self.max_rate_limit_retries = max_rate_limit_retries
        self.rate_limit_backoff = rate_limit_backoff
        self.max_rate_limit_wait = max_rate_limit_wait
        self.base_url = base_url.rstrip("/") if base_url else None
        self.user_agent = user_agent
        self.last_errors: list[str] = []
        """What went wrong in the latest fetch_posts, one line per subreddit ('r/name: ...')."""

        urls = (
            {"oauth_url": self.base_url, "reddit_url": self.base_url, "short_url": self.base_url}
            if self.base_url
            else {}
        )
        self._reddit = praw.Reddit(
            client_id=client_id,
            client_secret=client_secret,
            user_agent=user_agent,
            check_for_updates=False,  # it would contact PyPI
            requestor_class=_TimeoutRequestor,
            requestor_kwargs={"timeout": timeout, **(requestor_kwargs or {})},
            **urls,
        )
        # Never act as a user, even if praw.ini or praw_* variables name one.
        self._reddit.read_only = True
        self._reddit._objector.parsers[self._reddit.config.kinds["submission"]] = _RawChild
        core = self._reddit._core
        if isinstance(core, Session) and hasattr(core, "_retry_strategy_class"):
            core._retry_strategy_class = _retry_strategy(self._sleep)

    def __repr__(self) -> str:
        # Explicit so that nothing (Prefect parameters, logs) ever renders praw's config.
        return f"RedditPostSource(user_agent={self.user_agent!r}, base_url={self.base_url!r})"

    def fetch_posts(
        self, subreddits: Sequence[str], since: datetime | None, limit: int
    ) -> Iterator[Post]:
        """Posts made after `since` (all Reddit lists when None), at most `limit` (the newest)
        per subreddit, each id once, oldest first. Post.subreddit is the name as asked for,
        so a caller's per-subreddit bookkeeping lines up."""
        if since is not None and since.tzinfo is None:
            raise ValueError("since must be timezone-aware")
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        self.last_errors = []
        merged: dict[str, Post] = {}
        failures: list[RedditFetchError] = []
        succeeded = 0
        names = _unique(subreddits)
        for i, name in enumerate(names):
            if not _SUBREDDIT_NAME.fullmatch(name):
                self._problem(
                    name,
                    "is not a valid subreddit name (use the bare name, e.g. 'stocks'); skipped",
                )
                continue
            try:
                posts = self._fetch_subreddit(name, since, limit)
            except _SubredditUnavailable as exc:
                self._problem(name, str(exc))
                continue
            except RedditRateLimitError as exc:
                # The limit is per app: the remaining subreddits would only be refused too.
                failures.append(exc)
                self._problem(name, str(exc))
                for rest in names[i + 1 :]:
                    self._problem(rest, "not fetched: Reddit's rate limit was exhausted")
                break
            except RedditFetchError as exc:
                failures.append(exc)
                self._problem(name, str(exc))
                continue
            succeeded += 1
            for post in posts:
                merged.setdefault(post.id, post)
        if failures and not succeeded:
            # Nothing to hand back, so fail loudly (the flow then retries) rather than look empty.
            raise type(failures[0])("; ".join(self.last_errors))
        yield from sorted(merged.values(), key=lambda p: (p.created_utc, p.id))

    def _problem(self, name: str, message: str) -> None:
        line = f"r/{name}: {message}"
        log.warning("%s", line)
        self.last_errors.append(line)

    def _fetch_subreddit(self, name: str, since: datetime | None, limit: int) -> list[Post]:
        fetched_at = self.clock.now()
        listing: Iterator[Any] = iter(self._reddit.subreddit(name).new(limit=limit))
        posts: list[Post] = []
        seen: set[str] = set()
        read = malformed = deleted = duplicates = 0
        reached_since = False
        while (child := self._next_child(listing, name)) is not _END:
            read += 1
            data = child.data if isinstance(child, _RawChild) else None
            post_id, created = _identity(data)
            if not isinstance(data, Mapping) or post_id is None or created is None:
                malformed += 1
                continue
            if since is not None and created <= since:
                # /new is newest first: everything after this is already stored.
                reached_since = True
                break
            if post_id in seen:
                duplicates += 1
                continue
            seen.add(post_id)
            post = _to_post(data, post_id, created, name, fetched_at)
            if post is None:
                deleted += 1
                continue
            posts.append(post)
        if malformed:
            log.warning(
                "r/%s: skipped %d malformed listing item(s) (no id or creation time)",
                name,
                malformed,
            )
        if deleted:
            log.info("r/%s: skipped %d deleted or removed post(s)", name, deleted)
        if duplicates:
            log.debug("r/%s: %d repeated post id(s) kept once", name, duplicates)
        if since is not None and not reached_since and read >= limit:
            log.warning(
                "r/%s: the newest %d posts are all after %s; older new posts were not fetched "
                "(raise the limit or scrape more often)",
                name,
                limit,
                since.isoformat(),
            )
        log.debug("r/%s: %d post(s) from %d listing item(s)", name, len(posts), read)
        return posts

    def _next_child(self, listing: Iterator[Any], name: str) -> object:
        """The next listing child (praw fetches the next page when needed), waiting out 429s.

        praw's ListingGenerator changes no state when a page request fails, so calling it
        again retries that same page."""
        attempt = 0
        while True:
            try:
                return next(listing, _END)
            except TooManyRequests as exc:
                if attempt >= self.max_rate_limit_retries:
                    raise RedditRateLimitError(
                        f"Reddit still answered 429 Too Many Requests after {attempt} "
                        "waits; run again in a few minutes (an app may make about 100 "
                        "requests a minute)"
                    ) from None
                wait = self._rate_limit_wait(exc, attempt)
                attempt += 1
                log.warning(
                    "r/%s: rate limited by Reddit (429); waiting %.1f s (retry %d of %d)",
                    name,
                    wait,
                    attempt,
                    self.max_rate_limit_retries,
                )
                self._sleep(wait)
            except (PrawcoreException, PRAWException) as exc:
                raise _translate(exc, name) from None
            # praw parsing a reply that is JSON but not a listing; a KeyError(401) is
            # prawcore's way of reporting a 401 without a WWW-Authenticate header.
            except (KeyError, ValueError, TypeError, AttributeError, IndexError) as exc:
                raise _translate(exc, name) from None

    def _rate_limit_wait(self, exc: TooManyRequests, attempt: int) -> float:
        """Retry-After when sent; else the window's reset when its quota is spent; else backoff."""
        headers = exc.response.headers
        seconds = _seconds(headers.get("retry-after"))
        remaining = _seconds(headers.get("x-ratelimit-remaining"))
        if seconds is None and remaining is not None and remaining < 1:
            reset = _seconds(headers.get("x-ratelimit-reset"))
            seconds = None if reset is None else max(reset, 1.0)
        if seconds is None:
            seconds = self.rate_limit_backoff * 2**attempt
        return min(seconds, self.max_rate_limit_wait)


_END = object()


def _unique(names: Iterable[str]) -> list[str]:
    """Names stripped, each once (Reddit's names are case-insensitive), first spelling kept."""
    out: dict[str, str] = {}
    for raw in names:
        name = raw.strip()
        out.setdefault(name.lower(), name)
    return list(out.values())


def _seconds(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else math.nan
    except ValueError:
        return None  # an HTTP date, say: fall back to backoff
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _status(exc: ResponseException) -> int:
    return int(exc.response.status_code)


def _is_token_request(exc: ResponseException) -> bool:
    return str(getattr(exc.response, "url", "")).split("?")[0].endswith(_TOKEN_PATH)


def _translate(exc: Exception, name: str) -> Exception:
    """An exception that says what happened and what to do; never the request (whose
    headers hold the credentials) nor the original's text."""
    if (
        isinstance(exc, OAuthException | InvalidToken | InsufficientScope)
        or (isinstance(exc, ResponseException) and _status(exc) == 401)
        or (isinstance(exc, ResponseException) and _is_token_request(exc) and _status(exc) < 500)
        or (type(exc) is KeyError and exc.args == (401,))
    ):
        detail = f"HTTP {_status(exc)}" if isinstance(exc, ResponseException) else "401"
        if isinstance(exc, OAuthException):
            detail = exc.error
        return RedditAuthError(
            f"Reddit rejected the app's credentials ({detail}): {CREDENTIALS_HELP}"
        )
    if isinstance(exc, NotFound | Redirect | UnavailableForLegalReasons):
        return _SubredditUnavailable(
            f"not found (banned, deleted or never existed; Reddit answered {_status(exc)}); skipped"
        )
    if isinstance(exc, Forbidden):
        return _SubredditUnavailable("forbidden (private or quarantined; HTTP 403); skipped")
    if isinstance(exc, ServerError):
        return RedditFetchError(
            f"Reddit kept failing (HTTP {_status(exc)}) after retries; its posts were not "
            "fetched, try again later"
        )
    if isinstance(exc, RequestException):
        reason = type(exc.original_exception).__name__
        return RedditFetchError(
            f"could not reach Reddit ({reason}) after retries; check the network and try again"
        )
    if isinstance(exc, BadJSON):
        return RedditFetchError("Reddit sent a reply that is not JSON; try again later")
    if isinstance(exc, ResponseException):
        where = "the token endpoint" if _is_token_request(exc) else "the listing"
        return RedditFetchError(f"unexpected HTTP {_status(exc)} from {where}; try again later")
    return RedditFetchError(
        f"Reddit sent a reply praw could not read ({type(exc).__name__}); try again later"
    )


def _identity(data: object) -> tuple[str | None, datetime | None]:
    """A child's id and creation time, None for what is missing or unusable."""
    if not isinstance(data, Mapping):
        return None, None
    raw_id = data.get("id")
    post_id = raw_id.strip() if isinstance(raw_id, str) and raw_id.strip() else None
    raw_ts = data.get("created_utc")
    created = None
    if isinstance(raw_ts, int | float) and not isinstance(raw_ts, bool) and math.isfinite(raw_ts):
        try:
            created = datetime.fromtimestamp(raw_ts, UTC)
        except (OverflowError, OSError, ValueError):
            created = None
    return post_id, created


def _text(value: object, limit: int = MAX_BODY_CHARS) -> str:
    # NULs are never meaningful in a post; emoji and right-to-left text are kept as sent.
    return value.replace("\x00", "")[:limit] if isinstance(value, str) else ""


def _count(value: object) -> int:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return int(value)
    return 0


def _to_post(
    data: Mapping[str, Any], post_id: str, created: datetime, subreddit: str, fetched_at: datetime
) -> Post | None:
    """A Post, or None for a post whose text is gone (deleted or removed)."""
    title = _text(data.get("title"))
    body = _text(data.get("selftext"))
    title_gone = title.strip() in DELETED_TITLES
    body_gone = body.strip() in DELETED_TEXTS
    if title_gone:
        title = ""
    if body_gone:
        body = ""  # the title of a removed post still carries its tone
    if (title_gone or body_gone) and not title.strip() and not body.strip():
        return None
    author = data.get("author")
    permalink = data.get("permalink")
    url: str | None
    if isinstance(permalink, str) and permalink.startswith("/"):
        url = PERMALINK_BASE + permalink
    elif isinstance(permalink, str) and permalink.startswith("http"):
        url = permalink
    else:
        url = data.get("url") if isinstance(data.get("url"), str) else None
    return Post(
        id=post_id,
        subreddit=subreddit,
        title=title,
        body=body,
        author=author if isinstance(author, str) and author and author != "[deleted]" else None,
        score=_count(data.get("score")),
        num_comments=_count(data.get("num_comments")),
        created_utc=created,
        fetched_at=fetched_at,
        url=url,
        source=REDDIT_SOURCE,
    )
