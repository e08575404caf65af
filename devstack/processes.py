"""Stopping the local stack's server processes: one way for the broker, the S3 endpoint and Redis."""

from __future__ import annotations

import subprocess


def stop_process(process: subprocess.Popen | None, timeout: float = 10) -> None:
    """Terminate ``process`` if it still runs; kill it when it outlives ``timeout`` seconds, and reap it."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
