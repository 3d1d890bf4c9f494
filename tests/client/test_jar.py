"""The state jar and the scope it keys on: highest seq wins, rollback generations, scoping,
file persistence (0600, atomic, merged between writers), expiry."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from mcp_sessions.client import JarScope, StateJar
from mcp_sessions.client.identity import (
    principal_for_authorization,
    server_key_for_command,
    server_key_for_url,
)
from mcp_sessions.core.ids import new_session_id
from mcp_sessions.core.sealing import KeyRing, StateCodec

CODEC = StateCodec(KeyRing.generate(), audience="jar-tests")
A = JarScope("http://127.0.0.1:8000/mcp", "anonymous")
A_BOB = JarScope("http://127.0.0.1:8000/mcp", "bob")
B = JarScope("http://127.0.0.1:9000/mcp", "anonymous")


def token(session_id: str, seq: int, *, ttl_from_now: float | None = None, **state: object) -> str:
    now = None if ttl_from_now is None else time.time() + ttl_from_now - CODEC.ttl
    return CODEC.seal(dict(state), principal="anonymous", session_id=session_id, seq=seq, now=now)


def test_keeps_the_token_with_the_highest_seq_whatever_the_order_of_arrival() -> None:
    jar = StateJar()
    sid = new_session_id()
    t1, t2, t3 = (token(sid, n, n=n) for n in (1, 2, 3))
    assert jar.offer(A, sid, token=t2)
    assert not jar.offer(A, sid, token=t1)  # an older result arriving late changes nothing
    assert jar.token(A, sid) == t2
    assert jar.offer(A, sid, token=t3)
    assert not jar.offer(A, sid, token=t3)
    assert jar.token(A, sid) == t3
    assert jar.entry(A, sid).seq == 3  # type: ignore[union-attr]


def test_echoes_the_token_byte_for_byte() -> None:
    jar = StateJar()
    sid = new_session_id()
    sent = token(sid, 1, cart=["apple"])
    jar.offer(A, sid, token=sent)
    assert jar.token(A, sid) is sent or jar.token(A, sid) == sent


def test_a_malformed_token_is_ignored_not_kept() -> None:
    jar = StateJar()
    sid = new_session_id()
    good = token(sid, 1)
    jar.offer(A, sid, token=good)
    jar.offer(A, sid, token="not-a-token")
    assert jar.token(A, sid) == good


def test_restore_replays_an_older_token_and_outruns_results_already_in_flight() -> None:
    jar = StateJar()
    sid = new_session_id()
    t1, t2 = token(sid, 1), token(sid, 2)
    jar.offer(A, sid, token=t1)
    before = jar.generation(A, sid)
    jar.offer(A, sid, token=t2, generation=before)
    jar.replace_token(A, sid, t1)  # rollback
    assert jar.token(A, sid) == t1
    # A result of a request sent before the rollback must not undo it, even with a higher seq.
    assert not jar.offer(A, sid, token=token(sid, 3), generation=before)
    assert jar.token(A, sid) == t1
    # Results of requests sent after it count again.
    t2b = token(sid, 2)
    assert jar.offer(A, sid, token=t2b, generation=jar.generation(A, sid))
    assert jar.token(A, sid) == t2b


def test_scopes_never_share_tokens_or_sessions() -> None:
    jar = StateJar()
    sid = new_session_id()
    jar.offer(A, sid, token=token(sid, 1))
    jar.set_current(A, sid)
    assert jar.token(B, sid) is None  # another server
    assert jar.token(A_BOB, sid) is None  # another principal
    assert jar.current(B) is None and jar.current(A_BOB) is None
    assert jar.current(A) == sid


def test_slots_remember_one_session_each() -> None:
    jar = StateJar()
    first, second = new_session_id(), new_session_id()
    jar.set_current(A, first)
    jar.set_current(A, second, "research")
    assert jar.current(A) == first
    assert jar.current(A, "research") == second
    jar.forget(A, first)
    assert jar.current(A) is None and jar.entry(A, first) is None
    assert jar.current(A, "research") == second


def test_persists_to_a_0600_file_and_a_new_jar_reads_it_back(tmp_path: Path) -> None:
    path = tmp_path / "state" / "jar.json"
    jar = StateJar(path)
    sid = new_session_id()
    sent = token(sid, 4, count=4)
    jar.set_current(A, sid)
    jar.offer(A, sid, token=sent, expires_at="2999-01-01T00:00:00Z")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700

    again = StateJar(path)
    assert again.current(A) == sid
    entry = again.entry(A, sid)
    assert entry is not None
    assert (entry.token, entry.seq, entry.expires_at) == (sent, 4, "2999-01-01T00:00:00Z")
    # No temporary files are left beside it.
    assert sorted(p.name for p in path.parent.iterdir()) == ["jar.json", "jar.json.lock"]


def test_an_existing_wider_file_is_replaced_by_a_0600_one(tmp_path: Path) -> None:
    path = tmp_path / "jar.json"
    path.write_text(json.dumps({"version": 1, "scopes": []}))
    os.chmod(path, 0o644)
    jar = StateJar(path)
    jar.set_current(A, new_session_id())
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_two_writers_on_one_file_keep_each_others_scopes(tmp_path: Path) -> None:
    path = tmp_path / "jar.json"
    one, two = StateJar(path), StateJar(path)
    first, second = new_session_id(), new_session_id()
    one.set_current(A, first)
    two.set_current(B, second)  # two never saw A: it must not erase it
    merged = StateJar(path)
    assert merged.current(A) == first
    assert merged.current(B) == second


def test_process_local_scopes_are_never_written(tmp_path: Path) -> None:
    path = tmp_path / "jar.json"
    jar = StateJar(path)
    local = JarScope("local:inprocess:demo:1234", "anonymous")
    jar.set_current(local, new_session_id())
    assert jar.current(local) is not None
    assert not path.exists() or "local:" not in path.read_text()


def test_expired_sessions_are_pruned_and_not_resumed() -> None:
    jar = StateJar()
    old, live = new_session_id(), new_session_id()
    jar.set_current(A, old)
    jar.offer(A, old, expires_at="2001-01-01T00:00:00Z")
    jar.offer(A, live, token=token(live, 1))
    stale = new_session_id()
    jar.offer(A, stale, token=token(stale, 1, ttl_from_now=-5))  # the token itself ran out
    assert jar.entry(A, old).expired()  # type: ignore[union-attr]
    assert jar.entry(A, stale).expired()  # type: ignore[union-attr]
    assert jar.prune() == 2
    assert set(jar.sessions(A)) == {live}
    assert jar.current(A) is None


def test_a_file_that_is_not_a_jar_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "jar.json"
    path.write_text("[1, 2, 3]")
    with pytest.raises(ValueError, match="not a jar file"):
        StateJar(path)


# -- the scope's two halves ----------------------------------------------------------------------


def test_server_key_is_the_endpoint_without_credentials_query_or_fragment() -> None:
    key = server_key_for_url("HTTP://user:secret@Example.COM/mcp?x=1#frag")
    assert key == "http://example.com:80/mcp"
    assert "secret" not in key
    assert server_key_for_url("https://example.com:443/mcp") == server_key_for_url(
        "https://example.com/mcp"
    )
    assert server_key_for_url("http://127.0.0.1:8000/mcp") != server_key_for_url(
        "http://127.0.0.1:8001/mcp"
    )
    assert server_key_for_url("http://h/a") != server_key_for_url("http://h/b")
    with pytest.raises(ValueError):
        server_key_for_url("ftp://example.com/")


def test_server_key_of_a_command_is_its_command_line() -> None:
    key = server_key_for_command("mcp-sessions", ["demo", "--stdio"])
    assert key == 'stdio:["mcp-sessions","demo","--stdio"]'
    assert key != server_key_for_command("mcp-sessions", ["demo", "--stdio", "--state", "sealed"])


def test_principal_from_a_header_is_a_digest_not_the_secret() -> None:
    alice = principal_for_authorization("Bearer alice-token")
    assert "alice-token" not in alice
    assert alice != principal_for_authorization("Bearer bob-token")
    assert principal_for_authorization(None) == "anonymous"


def test_a_failing_disk_never_breaks_the_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "jar.json"
    jar = StateJar(path)

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", disk_full)
        sid = new_session_id()
        jar.set_current(A, sid)  # logged, kept in memory
        assert jar.current(A) == sid
    assert not path.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["jar.json.lock"]  # no temporary left
    jar.offer(A, sid, token=token(sid, 1))  # writable again: everything reaches the file
    assert StateJar(path).current(A) == sid
