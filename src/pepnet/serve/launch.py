"""Start ``pepnet serve`` as a child process on a free loopback port and wait until it is ready (for tests and
the serving benchmark), and a small blocking client."""
from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Client:
    """One keep-alive HTTP connection to the server: ``call`` returns (status, decoded JSON or text)."""

    def __init__(self, port: int, timeout: float = 30.0):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def call(self, method: str, path: str, body: bytes | dict | None = None,
             content_type: str = "application/json") -> tuple[int, dict | str]:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        self.conn.request(method, path, body=data, headers={"content-type": content_type} if data is not None else {})
        resp = self.conn.getresponse()
        raw = resp.read()
        text = raw.decode()
        return resp.status, json.loads(text) if resp.getheader("content-type", "").startswith("application/json") \
            else text

    def close(self) -> None:
        self.conn.close()


@contextlib.contextmanager
def running_server(source: str | Path, *args: str, log: Path | None = None,
                   ready_timeout_s: float = 180.0) -> Iterator[int]:
    """``pepnet serve SOURCE --port P ARGS`` in a child process; yields P once ``/readyz`` answers 200; stops it
    (SIGTERM, then SIGKILL after 10 s) on exit. ``log``: file for the server's output."""
    port = free_port()
    out = open(log, "w") if log else None  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "pepnet", "serve", str(source), "--port", str(port), *args],
                            stdout=out or subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"pepnet serve exited with code {proc.returncode} before it was ready"
                                   + (f"; see {log}" if log else ""))
            try:
                status, _ = Client(port, timeout=2).call("GET", "/readyz")
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"pepnet serve was not ready after {ready_timeout_s} s")
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if out:
            out.close()
