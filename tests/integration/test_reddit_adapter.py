"""RedditPostSource: the real praw client against the fake Reddit server on 127.0.0.1."""

from __future__ import annotations

import base64
import logging
import traceback
from datetime import UTC, datetime, timedelta

import praw
import pytest

from adapters.clock import ManualClock
from adapters.protocols import PostSource
from adapters.reddit import (
    MAX_BODY_CHARS,
    RedditAuthError,
    RedditFetchError,
    RedditPostSource,
    RedditRateLimitError,
)
from tests.fakes.reddit import (
    CLIENT_ID,
    CLIENT_SECRET,
    TOKEN_PATH,
    FakeReddit,
    Fault,
    fake_reddit_fixture,  # noqa: F401 - provides `fake_reddit`
    make_post,
)

T0 = datetime(2024, 3, 1, tzinfo=UTC)
NOW = datetime(2024, 3, 2, tzinfo=UTC)
USER_AGENT = "tradingml-tests/0.1 (fake reddit)"


class Sleeps(list[float]):
    """The injected sleep: records the waits instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_source(
    fake: FakeReddit, *, secret: str = CLIENT_SECRET, timeout: float = 5.0
) -> tuple[RedditPostSource, Sleeps]:
    sleeps = Sleeps()
    source = RedditPostSource(
        CLIENT_ID,
        secret,
        USER_AGENT,
        base_url=fake.url,
        timeout=timeout,
        clock=ManualClock(NOW),
        sleep=sleeps,
    )
    return source, sleeps


def add_series(fake: FakeReddit, sub: str, n: int, *, start: datetime = T0, step: int = 60) -> None:
    """n posts p000.. one `step` seconds apart; p{n-1} is the newest."""
    fake.add_posts(
        sub,
        [
            make_post(
                f"{sub[:2].lower()}{i:03d}", start + timedelta(seconds=i * step), subreddit=sub
            )
            for i in range(n)
        ],
    )


def test_pages_through_after_and_yields_newest_last(fake_reddit: FakeReddit) -> None:
    add_series(fake_reddit, "stocks", 250)
    source, _ = make_source(fake_reddit)
    assert isinstance(source, PostSource)

    posts = list(source.fetch_posts(["stocks"], None, 1000))

    assert [p.id for p in posts] == [f"st{i:03d}" for i in range(250)]  # oldest first
    first = posts[0]
    assert first.source == "reddit" and first.subreddit == "stocks"
    assert first.created_utc == T0 and first.created_utc.tzinfo is not None
    assert first.fetched_at == NOW  # from the injected clock
    assert first.url == "https://www.reddit.com/r/stocks/comments/st000/post_st000/"
    assert (first.author, first.score, first.num_comments) == ("some_user", 1, 0)
    # Three pages of at most 100, each continuing after the last fullname of the one before.
    pages = fake_reddit.listing_requests("stocks")
    assert [r.query.get("after") for r in pages] == [None, "t3_st150", "t3_st050"]
    assert all(r.query["raw_json"] == "1" for r in pages)
    assert len(fake_reddit.token_requests) == 1
    assert source.last_errors == []


def test_limit_keeps_only_the_newest(fake_reddit: FakeReddit) -> None:
    add_series(fake_reddit, "stocks", 250)
    source, _ = make_source(fake_reddit)

    posts = list(source.fetch_posts(["stocks"], None, 120))

    assert [p.id for p in posts] == [f"st{i:03d}" for i in range(130, 250)]
    assert len(fake_reddit.listing_requests("stocks")) == 2


def test_resumes_after_since_and_stops_paging(
    fake_reddit: FakeReddit, caplog: pytest.LogCaptureFixture
) -> None:
    add_series(fake_reddit, "stocks", 250)
    source, _ = make_source(fake_reddit)
    since = T0 + timedelta(seconds=200 * 60)  # st200's time: strictly after it

    posts = list(source.fetch_posts(["stocks"], since, 1000))

    assert [p.id for p in posts] == [f"st{i:03d}" for i in range(201, 250)]
    assert all(p.created_utc > since for p in posts)
    assert len(fake_reddit.listing_requests("stocks")) == 1  # the older pages were not read

    # Nothing new: still one page, nothing yielded.
    newest = T0 + timedelta(seconds=249 * 60)
    assert list(source.fetch_posts(["stocks"], newest, 1000)) == []
    assert len(fake_reddit.listing_requests("stocks")) == 2

    # More new posts than the limit: the newest come, with a warning about the gap.
    with caplog.at_level(logging.WARNING, logger="adapters.reddit"):
        posts = list(source.fetch_posts(["stocks"], T0, 10))
    assert [p.id for p in posts] == [f"st{i:03d}" for i in range(240, 250)]
    assert "older new posts were not fetched" in caplog.text


def test_merges_subreddits_newest_last(fake_reddit: FakeReddit) -> None:
    add_series(fake_reddit, "stocks", 30, step=60)
    add_series(fake_reddit, "Bitcoin", 30, start=T0 + timedelta(seconds=30), step=60)
    source, _ = make_source(fake_reddit)

    posts = list(source.fetch_posts(["stocks", "Bitcoin", "STOCKS"], None, 100))

    assert len(posts) == 60
    times = [p.created_utc for p in posts]
    assert times == sorted(times)
    assert [p.subreddit for p in posts[:4]] == ["stocks", "Bitcoin", "stocks", "Bitcoin"]
    assert len(fake_reddit.listing_requests("stocks")) == 1  # "STOCKS" is the same subreddit


def test_deleted_and_removed_posts(fake_reddit: FakeReddit) -> None:
    fake_reddit.add_posts(
        "stocks",
        [
            make_post(
                "del1", T0, title="SPY to the moon", selftext="[deleted]", author="[deleted]"
            ),
            make_post("rem1", T0 + timedelta(seconds=1), title="Puts on VTI", selftext="[removed]"),
            make_post(
                "gone", T0 + timedelta(seconds=2), title="[deleted by user]", selftext="[deleted]"
            ),
            make_post("gone2", T0 + timedelta(seconds=3), title="[removed]", selftext="[removed]"),
            make_post("nul1", T0 + timedelta(seconds=4), title="link post", author=None),
        ],
    )
    source, _ = make_source(fake_reddit)

    posts = {p.id: p for p in source.fetch_posts(["stocks"], None, 100)}

    assert set(posts) == {"del1", "rem1", "nul1"}
    assert (posts["del1"].title, posts["del1"].body, posts["del1"].author) == (
        "SPY to the moon",
        "",
        None,
    )
    assert (posts["rem1"].title, posts["rem1"].body) == ("Puts on VTI", "")
    assert posts["nul1"].author is None  # a JSON null author does not break praw's parsing


def test_long_text_emoji_rtl_and_nul(fake_reddit: FakeReddit) -> None:
    fake_reddit.add_posts(
        "stocks",
        [
            make_post("long", T0, selftext="a" * (MAX_BODY_CHARS + 5000)),
            make_post(
                "intl",
                T0 + timedelta(seconds=1),
                title="🚀🚀 BTC שלום مرحبا",
                selftext="مرحبا بالعالم 💎🙌",
            ),
            make_post("nul", T0 + timedelta(seconds=2), title="ti\x00tle", selftext="bo\x00dy\x00"),
        ],
    )
    source, _ = make_source(fake_reddit)

    posts = {p.id: p for p in source.fetch_posts(["stocks"], None, 100)}

    assert len(posts["long"].body) == MAX_BODY_CHARS
    assert posts["intl"].title == "🚀🚀 BTC שלום مرحبا"
    assert posts["intl"].body == "مرحبا بالعالم 💎🙌"
    assert (posts["nul"].title, posts["nul"].body) == ("title", "body")


def test_duplicate_ids_come_once(fake_reddit: FakeReddit) -> None:
    post = make_post("dup1", T0, title="first")
    fake_reddit.add_posts("stocks", [post, dict(post), make_post("uniq", T0 + timedelta(1))])
    # The same post listed in a second subreddit (a crosspost id) is still one post.
    fake_reddit.add_posts("investing", [make_post("dup1", T0, subreddit="investing")])
    source, _ = make_source(fake_reddit)

    posts = list(source.fetch_posts(["stocks", "investing"], None, 100))

    assert sorted(p.id for p in posts) == ["dup1", "uniq"]
    assert next(p for p in posts if p.id == "dup1").subreddit == "stocks"


def test_empty_listing_is_no_error(fake_reddit: FakeReddit) -> None:
    fake_reddit.create_subreddit("quiet")
    source, _ = make_source(fake_reddit)

    assert list(source.fetch_posts(["quiet"], None, 100)) == []
    assert source.last_errors == []
    assert len(fake_reddit.listing_requests("quiet")) == 1


def test_malformed_children_are_skipped_not_fatal(
    fake_reddit: FakeReddit, caplog: pytest.LogCaptureFixture
) -> None:
    add_series(fake_reddit, "stocks", 3)
    no_id = make_post("x", T0)
    del no_id["id"]
    no_time = make_post("y", T0)
    del no_time["created_utc"]
    for child in (
        {"kind": "t3", "data": no_id},  # praw itself would raise on this one
        {"kind": "t3", "data": no_time},
        {"kind": "t3", "data": {**make_post("z", T0), "created_utc": "yesterday"}},
        {"kind": "t3", "data": {**make_post("w", T0), "created_utc": 1e300}},
        {"kind": "t3", "data": None},
        {"kind": "t3"},
        "not a child",
    ):
        fake_reddit.add_raw_child("stocks", child)
    source, _ = make_source(fake_reddit)

    with caplog.at_level(logging.WARNING, logger="adapters.reddit"):
        posts = list(source.fetch_posts(["stocks"], None, 100))

    assert [p.id for p in posts] == ["st000", "st001", "st002"]
    assert "r/stocks: skipped 7 malformed listing item(s)" in caplog.text
    assert source.last_errors == []


def test_429_waits_as_told_then_succeeds(fake_reddit: FakeReddit) -> None:
    add_series(fake_reddit, "stocks", 150)
    # The second page is refused twice; praw's generator then asks for that same page again.
    fake_reddit.inject(
        Fault(
            status=429,
            headers={"Retry-After": "7"},
            path="/r/stocks/new",
            query={"after": "t3_st050"},
            remaining=2,
        )
    )
    source, sleeps = make_source(fake_reddit)

    posts = list(source.fetch_posts(["stocks"], None, 1000))

    assert [p.id for p in posts] == [f"st{i:03d}" for i in range(150)]
    assert sleeps == [7.0, 7.0]  # recorded, not slept
    pages = fake_reddit.listing_requests("stocks")
    assert [(r.status, r.query.get("after")) for r in pages] == [
        (200, None),
        (429, "t3_st050"),
        (429, "t3_st050"),
        (200, "t3_st050"),
    ]


def test_429_without_headers_backs_off_then_gives_up_keeping_others(
    fake_reddit: FakeReddit,
) -> None:
    add_series(fake_reddit, "stocks", 5)
    add_series(fake_reddit, "crypto", 5)
    add_series(fake_reddit, "bitcoin", 5)
    fake_reddit.inject(Fault(status=429, path="/r/crypto/", remaining=None))
    fake_reddit.ratelimit = {}  # no x-ratelimit-* headers at all
    source, sleeps = make_source(fake_reddit)

    posts = list(source.fetch_posts(["stocks", "crypto", "bitcoin"], None, 100))

    assert [p.subreddit for p in posts] == ["stocks"] * 5
    assert sleeps == [2.0, 4.0, 8.0]
    assert len(fake_reddit.listing_requests("crypto")) == 4
    assert fake_reddit.listing_requests("bitcoin") == []  # the app's quota is spent
    assert source.last_errors[0].startswith("r/crypto: Reddit still answered 429")
    assert source.last_errors[1] == "r/bitcoin: not fetched: Reddit's rate limit was exhausted"

    with pytest.raises(RedditRateLimitError, match="429"):
        list(source.fetch_posts(["crypto"], None, 100))


def test_ratelimit_headers_space_the_calls(fake_reddit: FakeReddit) -> None:
    add_series(fake_reddit, "stocks", 150)
    fake_reddit.ratelimit = {"remaining": "0", "used": "600", "reset": "1"}
    source, _ = make_source(fake_reddit)

    assert len(list(source.fetch_posts(["stocks"], None, 1000))) == 150

    first, second = fake_reddit.listing_requests("stocks")
    assert second.at - first.at >= 0.9  # prawcore waited for the window to reset


def test_5xx_is_retried_by_prawcore(fake_reddit: FakeReddit) -> None:
    add_series(fake_reddit, "stocks", 5)
    fake_reddit.fail_next(503, 1, path="/r/")
    fake_reddit.fail_next(500, 1, path="/r/")
    source, sleeps = make_source(fake_reddit)

    posts = list(source.fetch_posts(["stocks"], None, 100))

    assert len(posts) == 5 and source.last_errors == []
    assert [r.status for r in fake_reddit.listing_requests("stocks")] == [503, 500, 200]
    # prawcore's retry waits went through the injected sleep (0-2 s, then 2-4 s).
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 2 and 2 <= sleeps[1] <= 4


def test_persistent_500_on_one_subreddit_keeps_the_others(fake_reddit: FakeReddit) -> None:
    add_series(fake_reddit, "stocks", 5)
    add_series(fake_reddit, "broken", 5)
    add_series(fake_reddit, "bitcoin", 5, start=T0 + timedelta(hours=1))
    fake_reddit.fail_next(500, None, path="/r/broken/")
    source, _ = make_source(fake_reddit)

    posts = list(source.fetch_posts(["stocks", "broken", "bitcoin"], None, 100))

    assert [p.subreddit for p in posts] == ["stocks"] * 5 + ["bitcoin"] * 5
    assert len(fake_reddit.listing_requests("broken")) == 3  # prawcore tried three times
    assert source.last_errors == [
        "r/broken: Reddit kept failing (HTTP 500) after retries; its posts were not fetched, "
        "try again later"
    ]
    # When nothing at all could be fetched the caller hears about it.
    with pytest.raises(RedditFetchError, match=r"r/broken: Reddit kept failing \(HTTP 500\)"):
        list(source.fetch_posts(["broken"], None, 100))


def test_timeout_is_retried_then_reported(fake_reddit: FakeReddit) -> None:
    add_series(fake_reddit, "stocks", 5)
    add_series(fake_reddit, "slow", 5)
    source, _ = make_source(fake_reddit, timeout=0.3)
    fake_reddit.delay_next(1.0, 1, path="/r/stocks/")

    assert len(list(source.fetch_posts(["stocks"], None, 100))) == 5

    fake_reddit.delay_next(1.0, None, path="/r/slow/")
    posts = list(source.fetch_posts(["slow", "stocks"], None, 100))
    assert [p.subreddit for p in posts] == ["stocks"] * 5
    assert source.last_errors == [
        "r/slow: could not reach Reddit (ReadTimeout) after retries; check the network and "
        "try again"
    ]


def test_reply_that_is_not_json_fails_only_that_subreddit(fake_reddit: FakeReddit) -> None:
    add_series(fake_reddit, "stocks", 5)
    add_series(fake_reddit, "garbled", 5)
    fake_reddit.malformed_next(None, path="/r/garbled/")
    fake_reddit.inject(
        Fault(status=200, body=b'{"kind": "Listing"}', path="/r/odd/", remaining=None)
    )
    fake_reddit.create_subreddit("odd")
    source, _ = make_source(fake_reddit)

    posts = list(source.fetch_posts(["garbled", "odd", "stocks"], None, 100))

    assert len(posts) == 5
    assert (
        source.last_errors[0] == "r/garbled: Reddit sent a reply that is not JSON; try again later"
    )
    assert source.last_errors[1].startswith("r/odd: Reddit sent a reply praw could not read")


def test_expired_token_is_renewed_transparently(fake_reddit: FakeReddit) -> None:
    add_series(fake_reddit, "stocks", 5)
    source, sleeps = make_source(fake_reddit)
    assert len(list(source.fetch_posts(["stocks"], None, 100))) == 5

    fake_reddit.expire_tokens()
    posts = list(source.fetch_posts(["stocks"], None, 100))

    assert len(posts) == 5 and source.last_errors == []
    assert len(fake_reddit.token_requests) == 2
    assert [r.status for r in fake_reddit.listing_requests("stocks")] == [200, 401, 200]
    assert len(sleeps) == 1  # prawcore's retry wait, through the injected sleep


def _assert_secret_hidden(exc: BaseException, logs: str, secret: str) -> None:
    basic = base64.b64encode(f"{CLIENT_ID}:{secret}".encode()).decode()
    rendered = "".join(traceback.format_exception(exc)) + repr(exc) + str(exc) + logs
    assert secret not in rendered and basic not in rendered
    assert exc.__cause__ is None  # the prawcore exception (holding the request) is not chained


def test_wrong_credentials_name_the_env_vars_and_hide_the_secret(
    fake_reddit: FakeReddit, caplog: pytest.LogCaptureFixture
) -> None:
    add_series(fake_reddit, "stocks", 5)
    wrong = "wrong-secret-Qx7Tz0"
    source, _ = make_source(fake_reddit, secret=wrong)

    with caplog.at_level(logging.DEBUG), pytest.raises(RedditAuthError) as info:
        list(source.fetch_posts(["stocks", "bitcoin"], None, 100))

    message = str(info.value)
    for name in ("REDDIT_CLIENT_ID", "REDDIT_CLIENT_SECRET", "REDDIT_USER_AGENT"):
        assert name in message
    assert "HTTP 401" in message
    _assert_secret_hidden(info.value, caplog.text, wrong)
    assert wrong not in repr(source)
    assert fake_reddit.token_requests[0].status == 401
    assert fake_reddit.listing_requests("stocks") == []  # never got a token


@pytest.mark.parametrize(
    ("fault", "detail"),
    [
        # 401 without WWW-Authenticate: prawcore re-authenticates twice, then a bare KeyError.
        (Fault(status=401, path="/r/", remaining=None), "(401)"),
        (
            Fault(
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="reddit", error="invalid_token"'},
                path="/r/",
                remaining=None,
            ),
            "(HTTP 401)",
        ),
        # The token endpoint answering 200 with an OAuth error.
        (
            Fault(status=200, body=b'{"error": "invalid_grant"}', path=TOKEN_PATH, remaining=None),
            "(invalid_grant)",
        ),
    ],
)
def test_refused_authorization_is_an_auth_error(
    fake_reddit: FakeReddit, caplog: pytest.LogCaptureFixture, fault: Fault, detail: str
) -> None:
    add_series(fake_reddit, "stocks", 5)
    fake_reddit.inject(fault)
    source, _ = make_source(fake_reddit)

    with caplog.at_level(logging.DEBUG), pytest.raises(RedditAuthError) as info:
        list(source.fetch_posts(["stocks"], None, 100))

    assert detail in str(info.value) and "REDDIT_CLIENT_SECRET" in str(info.value)
    _assert_secret_hidden(info.value, caplog.text, CLIENT_SECRET)


def test_missing_private_and_invalid_subreddits_are_skipped(
    fake_reddit: FakeReddit, caplog: pytest.LogCaptureFixture
) -> None:
    add_series(fake_reddit, "stocks", 5)
    fake_reddit.create_subreddit("secretclub")
    fake_reddit.set_subreddit_status("secretclub", 403, reason="private")
    source, _ = make_source(fake_reddit)

    with caplog.at_level(logging.WARNING, logger="adapters.reddit"):
        posts = list(
            source.fetch_posts(["doesnotexist", "secretclub", "r/bad name", "stocks"], None, 100)
        )

    assert [p.subreddit for p in posts] == ["stocks"] * 5
    assert [e.split(":")[0] for e in source.last_errors] == [
        "r/doesnotexist",
        "r/secretclub",
        "r/r/bad name",
    ]
    assert "not found" in source.last_errors[0] and "private" in source.last_errors[1]
    assert "r/doesnotexist: not found" in caplog.text
    # Only skipped ones (no failures): an empty result, not an error.
    assert list(source.fetch_posts(["doesnotexist"], None, 100)) == []


def test_bad_arguments_are_refused(fake_reddit: FakeReddit) -> None:
    source, _ = make_source(fake_reddit)
    with pytest.raises(ValueError, match="timezone-aware"):
        list(source.fetch_posts(["stocks"], datetime(2024, 1, 1), 100))
    with pytest.raises(ValueError, match="limit"):
        list(source.fetch_posts(["stocks"], None, 0))
    with pytest.raises(RedditAuthError, match="REDDIT_CLIENT_SECRET"):
        RedditPostSource(CLIENT_ID, " ", USER_AGENT)
    with pytest.raises(ValueError, match="REDDIT_USER_AGENT"):
        RedditPostSource(CLIENT_ID, CLIENT_SECRET, "")
    assert fake_reddit.requests == []


def test_fake_serves_comments_to_praw(fake_reddit: FakeReddit) -> None:
    fake_reddit.add_post("stocks", "abc1", T0, title="with comments")
    fake_reddit.add_comment("abc1", "great call")
    reddit = praw.Reddit(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        user_agent=USER_AGENT,
        oauth_url=fake_reddit.url,
        reddit_url=fake_reddit.url,
        short_url=fake_reddit.url,
        check_for_updates=False,
    )

    submission = reddit.submission("abc1")

    assert submission.title == "with comments"
    assert [c.body for c in submission.comments.list() if isinstance(c, praw.models.Comment)] == [
        "great call"
    ]
