"""Redis connections and the embedded default Redis for the main job.

With ``REDIS_URL`` unset, ``embedded_redis()`` starts a private ``redis-server`` (temp
dir, free port) if the binary exists, otherwise an in-process ``fakeredis.TcpFakeServer``
(with Lua, so rq works), says which one it uses, and stops it on exit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import redis

log = logging.getLogger(__name__)


def connect(url: str, **kwargs: object) -> redis.Redis:
    """A decoded-bytes-off client (stream fields stay bytes; we decode JSON ourselves)."""
    return redis.Redis.from_url(url, socket_keepalive=True, health_check_interval=30, **kwargs)  # type: ignore[arg-type]


def pooled_client(r: redis.Redis) -> redis.Redis:
    """A client of ``r``'s connection pool that checks a connection out per command: the one to hand to
    another thread when ``r`` keeps one connection (``shared.service.pinned_client``)."""
    return redis.Redis(connection_pool=r.connection_pool)


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for logs and error messages)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ping(url: str, timeout: float = 0.5) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout).ping())
    except (redis.RedisError, OSError):
        return False


@dataclass
class EmbeddedRedis:
    url: str
    kind: str  # "redis-server" | "fakeredis"
    _stop: object = None

    def stop(self) -> None:
        if callable(self._stop):
            self._stop()


def start_redis_server(appendonly: bool = False, port: int | None = None, workdir: str | None = None) -> EmbeddedRedis:
    """Start a private redis-server on a free port in a temp dir; raises if the binary is missing."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server not installed")
    port = port or free_port()
    tmp = workdir or tempfile.mkdtemp(prefix="avwap-redis-")
    os.makedirs(tmp, exist_ok=True)
    args = [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", tmp, "--save", "",
        "--appendonly", "yes" if appendonly else "no", "--maxmemory-policy", "noeviction",
        "--daemonize", "no", "--logfile", os.path.join(tmp, "redis.log"),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not ping(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"redis-server did not start (see {tmp}/redis.log)")
        time.sleep(0.02)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
        if workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)

    return EmbeddedRedis(url=url, kind="redis-server", _stop=stop)


def start_fakeredis_server() -> EmbeddedRedis:
    from fakeredis import TcpFakeServer

    port = free_port()
    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    thread = threading.Thread(target=server.serve_forever, daemon=True, name="fakeredis")
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return EmbeddedRedis(url=f"redis://127.0.0.1:{port}/0", kind="fakeredis", _stop=stop)


@contextlib.contextmanager
def embedded_redis(prefer: str = "auto") -> Iterator[EmbeddedRedis]:
    """Start the embedded Redis (``prefer``: auto | redis-server | fakeredis) and stop it on exit."""
    if prefer in ("auto", "redis-server") and shutil.which("redis-server"):
        emb = start_redis_server()
    elif prefer == "redis-server":
        raise FileNotFoundError("redis-server not installed")
    else:
        emb = start_fakeredis_server()
    log.info("embedded Redis: %s at %s", emb.kind, emb.url)
    try:
        yield emb
    finally:
        emb.stop()
