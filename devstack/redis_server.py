"""Debian's ``redis-server`` on loopback, in its own process: the Celery broker of the Celery stack.

``make redis-server`` installs the package when missing (like ``make chromium``). Nothing is
persisted: no RDB snapshots, no append-only file, a throwaway working directory.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from devstack.kafka_broker import free_port
from devstack.processes import stop_process

REDIS_SERVER = "redis-server"


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen
    workdir: Path

    def url(self, database: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        stop_process(self.process)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def start_redis_server(timeout: float = 20.0) -> RedisServer:
    """Start ``redis-server`` on a free loopback port and wait until it answers PING."""
    executable = shutil.which(REDIS_SERVER)
    if executable is None:
        raise RuntimeError("redis-server is not installed: run 'make redis-server' (Debian's redis-server package)")
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="akb-redis-"))
    process = subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--daemonize", "no", "--logfile", str(workdir / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while not _ping(port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            log = (workdir / "redis.log").read_text(errors="replace") if (workdir / "redis.log").exists() else ""
            raise RuntimeError(f"redis-server did not start on port {port}:\n{log[-2000:]}")
        time.sleep(0.1)
    return RedisServer(port, process, workdir)
