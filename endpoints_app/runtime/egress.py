"""The egress proxy of an environment build: the build's only way out of its empty network namespace.

    with EgressProxy(socket_path, allowed, private_ok, log_fd) as proxy: ...

Run by the trusted side (the worker that starts the build), on a Unix socket in the build's own folder
that the sandbox sees at SANDBOX_SOCKET; runtime/egress_relay.py, inside the sandbox, forwards
127.0.0.1:<port> to it and uv uses it as HTTPS_PROXY / HTTP_PROXY. It accepts `CONNECT host:port`
(and absolute-form plain-HTTP requests, for an http:// index) only to an allowed (host, port), resolves
the host itself and connects to an address it checked: never loopback, link-local, private or
multicast addresses unless the host is one the configured index URLs name (`private_ok`). Anything
else gets 403 and a line in the build log. When the studio's host has its own HTTPS_PROXY /
HTTP_PROXY (NO_PROXY honoured), an allowed request goes out through it instead, and that proxy
resolves the host. Standard library and asyncio only."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import os
import socket
import threading
from pathlib import Path
from urllib.parse import unquote, urlsplit

from endpoints_app.runtime.egress_relay import pipe

SANDBOX_SOCKET = "/run/studio-egress.sock"
RELAY_SCRIPT = Path(__file__).with_name("egress_relay.py")
RELAY_PORT = 3128
HEADER_LIMIT = 16 * 1024
CONNECT_TIMEOUT = 20.0
PYPI_FILES = "files.pythonhosted.org"


def allowed_hosts(index_urls: list[str], extra_hosts: list[str] | None) -> tuple[set[tuple[str, int]], set[str]]:
    """(allowed (host, port) pairs, hosts that may resolve to private addresses) for these index URLs.

    Each URL's host on 443 and on the URL's own port; `extra_hosts` ("host" or "host:port") on 443
    or their port; when extra_hosts is None (the default) and PyPI is an index, files.pythonhosted.org."""
    allowed: set[tuple[str, int]] = set()
    named: set[str] = set()
    for url in index_urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            continue
        host = parts.hostname.lower()
        named.add(host)
        allowed.add((host, 443))
        allowed.add((host, parts.port or (443 if parts.scheme == "https" else 80)))
    if extra_hosts is None:
        extra_hosts = [PYPI_FILES] if ("pypi.org", 443) in allowed else []
    for entry in extra_hosts:
        host, port = entry.strip().lower(), 443
        if host.count(":") == 1 and host.rpartition(":")[2].isdigit():
            host, port = host.rpartition(":")[0], int(host.rpartition(":")[2])
        if host:
            allowed.add((host.strip("[]"), port))
    return allowed, named


# Loopback, link-local, private (RFC 1918, carrier-grade NAT, unique local), unspecified, multicast and
# reserved ranges: what a build must not reach through the proxy.
_DENIED = [ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.168.0.0/16", "224.0.0.0/4", "240.0.0.0/4", "::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8")]


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return not any(ip in network for network in _DENIED if network.version == ip.version)


class Refused(Exception):
    pass


class HostProxies:
    """The studio host's own way out (HTTPS_PROXY / HTTP_PROXY / NO_PROXY, as pip would use them): the
    egress proxy checks the (host, port) first, then goes through the host's proxy, which resolves it."""

    def __init__(self, environ) -> None:
        def get(name: str) -> str:
            return environ.get(name) or environ.get(name.lower()) or ""

        self.https, self.http = get("HTTPS_PROXY"), get("HTTP_PROXY")
        self.bypass = [e.strip().lstrip(".").lower() for e in get("NO_PROXY").split(",") if e.strip()]

    def for_request(self, host: str, plain_http: bool) -> str | None:
        url = self.http if plain_http else self.https
        if not url or any(e == "*" or host == e or host.endswith("." + e) for e in self.bypass):
            return None
        return url

    @staticmethod
    async def open(url: str, host: str, port: int, tunnel: bool):
        parts = urlsplit(url if "://" in url else f"http://{url}")
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(parts.hostname, parts.port or 80), timeout=CONNECT_TIMEOUT)
        if not tunnel:
            return reader, writer
        auth = ""
        if parts.username:
            token = base64.b64encode(f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode())
            auth = f"Proxy-Authorization: Basic {token.decode()}\r\n"
        writer.write(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}\r\n".encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=CONNECT_TIMEOUT)
        if head.split(b" ", 2)[1:2] != [b"200"]:
            writer.close()
            status = head.split(b"\r\n", 1)[0].decode("latin-1")
            raise OSError(f"the host's proxy answered {status}")
        return reader, writer


class EgressProxy:
    def __init__(self, socket_path: Path, allowed: set[tuple[str, int]], private_ok: set[str], log_fd: int,
                 environ: dict[str, str] | None = None):
        self.socket_path = Path(socket_path)
        self.upstream = HostProxies(os.environ if environ is None else environ)
        self.allowed = allowed
        self.private_ok = private_ok
        self.log_fd = log_fd
        self.refused: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="egress-proxy", daemon=True)
        self._server: asyncio.AbstractServer | None = None

    # -- lifetime ---------------------------------------------------------------------------------
    def __enter__(self) -> EgressProxy:
        self.socket_path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # A build folder's path can pass AF_UNIX's 108 bytes: bind through a short /proc/self/fd path.
        dirfd = os.open(self.socket_path.parent, os.O_PATH | os.O_DIRECTORY)
        try:
            short = f"/proc/self/fd/{dirfd}/{self.socket_path.name}"
            sock.bind(short)
            os.chmod(short, 0o666)  # the build uid connects; only that build's sandbox sees the folder
        finally:
            os.close(dirfd)
        sock.listen(64)
        sock.setblocking(False)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_unix_server(self._serve, sock=sock, limit=HEADER_LIMIT), self._loop).result()
        return self

    def __exit__(self, *exc) -> None:
        async def stop() -> None:
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
        self.socket_path.unlink(missing_ok=True)

    def _note(self, line: str) -> None:
        self.refused.append(line)
        try:
            os.write(self.log_fd, f"=== egress proxy: {line} ===\n".encode())
        except OSError:
            pass

    # -- one connection ---------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        method, _, rest = request_line.partition(" ")
        target = rest.rpartition(" ")[0] or rest
        try:
            host, port, forward = self._target(method, target, head)
            via = self.upstream.for_request(host, plain_http=forward is not None)
            if via is None:
                upstream_reader, upstream_writer = await self._open(host, port)
            else:
                upstream_reader, upstream_writer = await self.upstream.open(via, host, port, tunnel=forward is None)
                if forward is not None:
                    forward = head  # a proxy takes the absolute form as the build sent it
        except Refused as exc:
            self._note(f"refused {method} {target[:200]}: {exc}")
            writer.write(f"HTTP/1.1 403 Forbidden\r\nContent-Length: {len(str(exc))}\r\nConnection: close\r\n"
                         f"\r\n{exc}".encode())
            await self._close(writer)
            return
        except (OSError, EOFError, asyncio.LimitOverrunError) as exc:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            self._note(f"could not reach {host}:{port}: {exc.__class__.__name__}")
            await self._close(writer)
            return
        if forward is None:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            upstream_writer.write(forward)
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    def _target(self, method: str, target: str, head: bytes) -> tuple[str, int, bytes | None]:
        """(host, port, bytes to send upstream first: None for CONNECT)."""
        if method == "CONNECT":
            host, sep, port = target.rpartition(":")
            if not sep or not port.isdigit():
                raise Refused("CONNECT needs host:port")
            host, port_number, forward = host.strip("[]").lower(), int(port), None
        else:
            parts = urlsplit(target)
            if parts.scheme != "http" or not parts.hostname:
                raise Refused("only CONNECT and absolute http:// requests")
            host, port_number = parts.hostname.lower(), parts.port or 80
            path = parts.path or "/"
            origin = path + (f"?{parts.query}" if parts.query else "")
            first, _, headers = head.partition(b"\r\n")
            version = first.rsplit(b" ", 1)[-1]
            forward = f"{method} {origin} ".encode("latin-1") + version + b"\r\n" + headers
        if (host, port_number) not in self.allowed:
            raise Refused(f"{host}:{port_number} is not a package index host")
        return host, port_number, forward

    async def _open(self, host: str, port: int):
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise Refused(f"{host} does not resolve") from exc
        addresses = [info for info in infos if is_public(info[4][0]) or host in self.private_ok]
        if not addresses:
            raise Refused(f"{host} resolves to a private address")
        last: OSError = OSError("no address")
        for family, kind, proto, _name, address in addresses:
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, address), timeout=CONNECT_TIMEOUT)
            except (TimeoutError, OSError) as exc:
                sock.close()
                last = exc if isinstance(exc, OSError) else OSError("timed out")
                continue
            return await asyncio.open_connection(sock=sock)
        raise last

    @staticmethod
    async def _close(writer: asyncio.StreamWriter) -> None:
        try:
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass
