"""The sans-IO rules of per-caller limits (issue #12): who a caller is, the creation-rate
bucket, the configuration's checks and the messages of -31005."""

from __future__ import annotations

import pytest

from mcp_sessions.core.errors import LIMIT_EXCEEDED
from mcp_sessions.core.limits import Limits, TokenBucket, caller_key, json_size, too_fast, too_many


def test_an_authenticated_caller_is_its_principal_wherever_it_comes_from() -> None:
    key = '["https://issuer","alice","app"]'
    assert caller_key(key, anonymous=False, peer="198.51.100.1") == key
    assert (
        caller_key(key, anonymous=False, peer=None, forwarded_for=["1.2.3.4"], trusted_hops=1)
        == key
    )


def test_an_anonymous_caller_is_its_address() -> None:
    assert caller_key("anonymous", anonymous=True, peer="198.51.100.1") == "anonymous@198.51.100.1"
    # No address (stdio): all anonymous callers share one key, as they share a principal.
    assert caller_key("anonymous", anonymous=True, peer=None) == "anonymous"


def test_an_ipv6_caller_is_its_64_network() -> None:
    # A client picks addresses in its /64 at will, so the /64 is one caller.
    one = caller_key("anonymous", anonymous=True, peer="2001:db8:1:2::17")
    other = caller_key("anonymous", anonymous=True, peer="2001:db8:1:2:ffff::1")
    assert one == other == "anonymous@2001:db8:1:2::/64"
    assert caller_key("anonymous", anonymous=True, peer="2001:db8:1:3::17") != one
    # IPv4-mapped IPv6 is the IPv4 address; a name a proxy wrote is taken as is.
    assert caller_key("anonymous", anonymous=True, peer="::ffff:192.0.2.5") == "anonymous@192.0.2.5"
    assert caller_key("anonymous", anonymous=True, peer="unknown") == "anonymous@unknown"


def test_forwarded_for_counts_only_as_far_as_proxies_are_trusted() -> None:
    forwarded = ["203.0.113.9, 198.51.100.7", "192.0.2.1"]  # two header lines
    # Untrusted (the default): the peer, whatever the client wrote.
    assert (
        caller_key("anonymous", anonymous=True, peer="10.0.0.1", forwarded_for=forwarded)
        == "anonymous@10.0.0.1"
    )
    # One trusted proxy: the address it appended (the last one), not what the client wrote.
    one = caller_key(
        "anonymous", anonymous=True, peer="10.0.0.1", forwarded_for=forwarded, trusted_hops=1
    )
    assert one == "anonymous@192.0.2.1"
    two = caller_key(
        "anonymous", anonymous=True, peer="10.0.0.1", forwarded_for=forwarded, trusted_hops=2
    )
    assert two == "anonymous@198.51.100.7"
    # Fewer entries than trusted hops: the request did not come through them; the peer counts.
    short = caller_key(
        "anonymous", anonymous=True, peer="10.0.0.1", forwarded_for=["192.0.2.1"], trusted_hops=2
    )
    assert short == "anonymous@10.0.0.1"


def test_the_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket.full(60, now=0.0)  # 60 per minute: one a second
    for _ in range(60):
        assert bucket.wait(0.0) == 0.0
        bucket.take(0.0)
    assert bucket.wait(0.0) == pytest.approx(1.0)
    assert bucket.wait(0.5) == pytest.approx(0.5)
    assert bucket.wait(1.0) == 0.0
    bucket.take(1.0)
    assert not bucket.is_full(1.0)
    assert bucket.is_full(61.0)  # a minute refills it, and no more than full
    assert bucket.tokens == 60


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"max_sessions_per_principal": 0}, "at least 1"),
        ({"max_handles_per_principal": -5}, "at least 1"),
        ({"max_creations_per_minute": 1.5}, "whole number"),
        ({"max_legacy_sessions_per_principal": True}, "whole number"),
        ({"max_initialize_bytes": 10}, "at least 256"),
        ({"trusted_proxy_hops": -1}, "0 or more"),
    ],
)
def test_limits_refuse_nonsense(options: dict[str, object], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Limits(**options)  # type: ignore[arg-type]


def test_none_switches_a_quota_off() -> None:
    limits = Limits(max_sessions_per_principal=None)
    assert limits.cap("sessions") is None
    assert limits.cap("handles") == 1000


def test_messages_name_the_limit_and_when_room_frees_up() -> None:
    error = too_many("sessions", 1000, 12.2)
    assert error.code == LIMIT_EXCEEDED and error.retry_after == 13
    assert "1000 live sessions per caller" in error.message
    assert "max_sessions_per_principal" in error.message
    assert "at the latest in 13 s" in error.message
    legacy = too_many("legacy", 5, 0.1)
    assert "max_legacy_sessions_per_principal" in legacy.message and legacy.retry_after == 1
    assert "DELETE" in legacy.message
    rate = too_fast(10, 5.5)
    assert "10 creations per minute" in rate.message and "Retry in 6 s" in rate.message
    assert rate.retry_after == 6


def test_json_size_is_what_a_store_stores() -> None:
    assert json_size({"a": 1}) == len('{"a":1}')
    assert json_size({"é": "ü"}) == len('{"é":"ü"}'.encode())
    with pytest.raises(ValueError):
        json_size({"x": float("nan")})
