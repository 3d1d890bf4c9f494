"""`mcp-sessions keys new` and `mcp-sessions token inspect`, run as the real console script."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mcp_sessions.core import KeyRing, SealingKey, StateCodec
from mcp_sessions.keyfiles import read_key_file

CLI = [sys.executable, "-m", "mcp_sessions"]


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


def test_keys_new_prints_a_key_the_codec_reads() -> None:
    result = run("keys", "new")
    assert result.returncode == 0, result.stderr
    assert len(KeyRing.from_text(result.stdout).keys) == 1


def test_keys_new_writes_a_0600_file_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "keys.txt"
    assert run("keys", "new", "--output", str(path)).returncode == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_text()
    refused = run("keys", "new", "--output", str(path))
    assert refused.returncode != 0 and "--force" in refused.stderr
    assert path.read_text() == first  # nothing lost
    path.chmod(0o644)
    assert run("keys", "new", "--output", str(path), "--force").returncode == 0
    assert path.read_text() != first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.txt"
    path.write_text(SealingKey.generate().to_text() + "\n")
    path.chmod(0o600)
    return path


def seal_with(key_file: Path, *, ttl: float = 600, now: float | None = None) -> str:
    codec = StateCodec(read_key_file(key_file), audience="demo", ttl=ttl)
    return codec.seal(
        {"cart": ["é", 2]}, principal="anonymous", session_id="s" * 20, seq=5, now=now
    )


def test_inspect_prints_the_content(key_file: Path) -> None:
    result = run("token", "inspect", "--key-file", str(key_file), seal_with(key_file))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["valid"] is True
    assert report["state"] == {"cart": ["é", 2]}
    assert report["seq"] == 5 and report["audience"] == "demo"
    assert report["sessionId"] == "s" * 20 and report["principal"] == "anonymous"


def test_inspect_reads_stdin(key_file: Path) -> None:
    result = run("token", "inspect", "--key-file", str(key_file), "-", stdin=seal_with(key_file))
    assert result.returncode == 0 and json.loads(result.stdout)["seq"] == 5


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        (["--audience", "other"], "sealed for server 'demo', not 'other'"),
        (["--principal", "bob"], "sealed for principal 'anonymous', not 'bob'"),
        (["--session", "t" * 20], "not 'tttttttttttttttttttt'"),
    ],
)
def test_inspect_reports_binding_problems(key_file: Path, flags: list[str], problem: str) -> None:
    result = run("token", "inspect", "--key-file", str(key_file), *flags, seal_with(key_file))
    assert result.returncode == 1
    assert problem in json.loads(result.stdout)["problems"][0]


def test_inspect_reports_expiry(key_file: Path) -> None:
    token = seal_with(key_file, ttl=1, now=time.time() - 3600)
    result = run("token", "inspect", "--key-file", str(key_file), token)
    assert result.returncode == 1
    assert json.loads(result.stdout)["problems"][0].startswith("expired at ")


def test_inspect_says_why_it_cannot(key_file: Path, tmp_path: Path) -> None:
    token = seal_with(key_file)
    other = tmp_path / "other.txt"
    other.write_text(SealingKey.generate().to_text())
    other.chmod(0o600)
    cases = {
        "garbage": "not a state token: malformed",
        token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]: "tampered",
    }
    for value, words in cases.items():
        result = run("token", "inspect", "--key-file", str(key_file), value)
        assert result.returncode == 1 and words in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    wrong_key = run("token", "inspect", "--key-file", str(other), token)
    assert wrong_key.returncode == 1 and "unknown key" in wrong_key.stderr
    missing = run("token", "inspect", "--key-file", str(tmp_path / "nope"), token)
    assert missing.returncode == 1 and "cannot read key file" in missing.stderr


def test_help_explains_itself() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert "keys" in result.stdout and "token" in result.stdout
    env_result = subprocess.run(
        ["mcp-sessions", "--version"],
        capture_output=True,
        text=True,
        check=False,
        env={
            **os.environ,
            "PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
        },
    )
    assert env_result.returncode == 0 and "mcp-sessions" in env_result.stdout
