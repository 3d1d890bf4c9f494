"""The processes of the gateway benchmark (bench_gateway.py, also used by bench_redis.py):
a free loopback port, starting a server and waiting until it answers, stopping it by its
PID, and Debian's nginx run with the configuration ``mcp-sessions gateway --emit-config
nginx`` prints. Every process runs on 127.0.0.1 and logs to a file in the run's directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.fixtures.nginx import find_nginx, nginx_conf  # noqa: E402
from tests.fixtures.processes import free_port  # noqa: E402

CLI = str(Path(sys.executable).with_name("mcp-sessions"))


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    port: int


def start(
    name: str,
    argv: list[str],
    port: int,
    logs: Path,
    ready_path: str = "/",
    env: dict[str, str] | None = None,
) -> Proc:
    log = (logs / f"{name}.log").open("wb")
    popen = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
    )
    log.close()
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"{name} exited: {(logs / f'{name}.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready_path}", timeout=1):
                return Proc(name, popen, port)
        except urllib.error.HTTPError:
            return Proc(name, popen, port)  # it answers: up
        except OSError:
            time.sleep(0.05)
    stop(Proc(name, popen, port))
    raise RuntimeError(f"{name} did not start")


def stop(proc: Proc) -> None:
    if proc.popen.poll() is None:
        os.kill(proc.popen.pid, signal.SIGTERM)
        try:
            proc.popen.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.popen.pid, signal.SIGKILL)
            proc.popen.wait(10)


def start_nginx(upstream: Proc, logs: Path) -> Proc | None:
    binary = find_nginx()
    if binary is None:
        return None
    port = free_port()
    snippet = subprocess.run(
        [
            CLI,
            "gateway",
            "--upstream",
            f"http://127.0.0.1:{upstream.port}/mcp",
            "--port",
            str(port),
            "--emit-config",
            "nginx",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    directory = logs / "nginx"
    directory.mkdir()
    conf = nginx_conf(directory, snippet, worker_connections=1024)
    return start(
        "nginx",
        [binary, "-e", str(directory / "error.log"), "-p", str(directory), "-c", str(conf)],
        port,
        logs,
    )
