"""How the studio reaches a sandboxed model server: the Unix socket in the instance's own sandbox
folder (`<data dir>/sandbox/<name>/run/server.sock`, runtime/sandbox.py), never a TCP port. No other
sandbox sees that folder, so none can listen in its place; and every connection checks the peer's
credentials (SO_PEERCRED, given by the kernel): its uid must be the one the instance was started with
(`<data dir>/sandbox/<name>/uid`, written by the studio, read-only to the sandbox).

The gateway (gateway/http1.py, gateway/proxy.py), the controller's probes (controller/process.py) and
the batch controller all go through here. Standard library only."""

from __future__ import annotations

import functools
import http.client
import os
import socket
import struct
from pathlib import Path

from endpoints_app.runtime import sandbox as sb

# sun_path holds 108 bytes; longer paths are reached through a descriptor of their folder.
_SUN_PATH_MAX = 100
# A Ray node's relay answers with this header when it could not reach its model server: no byte of the
# request got there, so the gateway may try another instance (gateway/proxy.py).
UNDELIVERED_HEADER = b"x-studio-undelivered"


class WrongPeer(ConnectionError):
    """Something other than the instance's own server answered on its socket."""


def socket_path(data_dir: Path, name: str) -> Path:
    return Path(data_dir) / sb.SANDBOX_DIRNAME / sb.sanitize(name) / "run" / sb.SOCKET_NAME


def expected_uid(data_dir: Path, name: str) -> int | None:
    """The uid the instance's sandbox was prepared with; None when it was not started sandboxed here."""
    return sb.recorded_uid(Path(data_dir) / sb.SANDBOX_DIRNAME / sb.sanitize(name))


@functools.lru_cache(maxsize=4096)
def _folder_fd(folder: str) -> int:
    return os.open(folder, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def connect_path(path: str | Path) -> str:
    """A path connect() accepts for `path`, however deep the data dir is."""
    path = str(path)
    if len(path.encode()) <= _SUN_PATH_MAX:
        return path
    folder, name = os.path.split(path)
    return f"/proc/self/fd/{_folder_fd(folder)}/{name}"


def peer_uid(sock) -> int:
    _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                          struct.calcsize("3i")))
    return uid


def check_peer(sock, uid: int | None) -> None:
    if uid is None:
        raise WrongPeer("no uid recorded for this instance: it was not started here")
    if (seen := peer_uid(sock)) != uid:
        raise WrongPeer(f"the socket's server runs as uid {seen}, not the instance's {uid}")


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over an instance's socket, checking who listens there."""

    def __init__(self, path: str | Path, uid: int | None, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path_ = str(path)
        self.uid = uid

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(connect_path(self.path_))
            check_peer(sock, self.uid)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def connection(data_dir: Path, name: str, timeout: float) -> UnixHTTPConnection:
    return UnixHTTPConnection(socket_path(data_dir, name), expected_uid(data_dir, name), timeout)


def answers_2xx(conn: http.client.HTTPConnection, path: str, headers: dict[str, str] | None = None) -> bool:
    """One GET on `conn` (closed after); True on a 2xx answer, False on any other answer or failure."""
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return 200 <= response.status < 300
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
