"""Inside an environment build's sandbox (empty network namespace, the build uid): the way to the index.

    python -I egress_relay.py <unix socket> <port> -- <command...>

Listens on 127.0.0.1:<port> in the build's own namespace, forwards each connection to the Unix socket
of the studio's egress proxy (runtime/egress.py, which decides what may pass), runs the command and
exits with its status. Trusts nothing: everything it relays is checked on the other side. Standard
library only (it runs with the studio's interpreter in isolated mode, before any venv exists)."""

import asyncio
import socket
import sys


async def pipe(reader, writer):
    """Copy until end of file, then close the writer (the egress proxy uses it too)."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        try:
            writer.close()
        except OSError:
            pass


async def main(path, port, command):
    async def relay(reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_unix_connection(path)
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(relay, "127.0.0.1", port, family=socket.AF_INET)
    async with server:
        child = await asyncio.create_subprocess_exec(*command)
        return await child.wait()


if __name__ == "__main__":
    separator = sys.argv.index("--")
    sys.exit(asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[separator + 1:])))
