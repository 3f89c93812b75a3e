"""Where a model server listens: the Unix socket in its sandbox's run folder (the only way in the
controller gives it), and a TCP port only when started by hand (bench/, tests of the server itself)."""

from __future__ import annotations

import os
import socket

# Seconds a model server keeps an idle keep-alive connection open. The gateway reuses a pooled
# connection only while it has been idle for less than this, minus a margin (gateway/http1.py).
KEEP_ALIVE_S = 30


def sockets(uds: str | None, host: str, port: int | None) -> list[socket.socket]:
    found = []
    if uds:
        try:
            os.unlink(uds)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(uds)
        os.chmod(uds, 0o600)  # the studio connects as root or as this same uid; nobody else
        found.append(sock)
    if port:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        found.append(sock)
    if not found:
        raise SystemExit("give --uds or --port")
    return found


def serve(app, uds: str | None, host: str, port: int | None, **options) -> None:
    """uvicorn.run, on every socket asked for, closing idle keep-alive connections after KEEP_ALIVE_S."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, timeout_keep_alive=KEEP_ALIVE_S, **options))
    server.run(sockets=sockets(uds, host, port))
