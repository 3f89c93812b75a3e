"""The embedded default's broker: kombu's filesystem transport, with every message written under
a temporary name and renamed into the queue folder, so a worker never reads a half-written one.

kombu's own writer creates the file under its final name and then writes it; a worker polling at
that instant moves the still empty file away, fails to decode it and stops with "Unrecoverable
error: JSONDecodeError". Short re-queued steps (provisioning, batch jobs) send many messages, so
the race was hit in practice. Likewise kombu creates a queue's exchange table by opening it for
writing (empty) before it locks it, so a process declaring the same queue at that instant read an
empty table: here the table comes into being whole. And kombu's filesystem transport keeps one
binding table per process (`global_state`) that `queue_bind` fills before it writes the binding to
the exchange file, so another thread declaring the same queue at that instant saw the binding,
skipped the file, published, found no route in the file and dropped its messages: binding is done
under one lock per process. Importing this module registers the transport for `filesystem://`."""

from __future__ import annotations

import logging
import os
import threading
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

log = logging.getLogger("studio.broker")

_BIND_LOCK = threading.Lock()


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # "<name>.tmp" does not end in ".<queue>.msg", so no reader picks it up before the rename.
        temp = final + ".tmp"
        try:
            with open(temp, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(temp, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def queue_bind(self, *args, **kwargs):
        with _BIND_LOCK:
            return super().queue_bind(*args, **kwargs)

    def _queue_bind(self, exchange, routing_key, pattern, queue):
        table = self._exchange_file(exchange)
        self.control_folder.mkdir(exist_ok=True)
        if not table.exists():
            # An empty table, linked into place whole (link fails if another process was first);
            # kombu then adds the binding under its lock, as it does for a table that exists.
            temp = table.with_name(f"{table.name}.{uuid.uuid4().hex}.tmp")
            temp.write_bytes(b"[]")
            try:
                os.link(temp, table)
            except FileExistsError:
                pass
            finally:
                temp.unlink()
        super()._queue_bind(exchange, routing_key, pattern, queue)

    def _get(self, queue):
        try:
            return super()._get(queue)
        except ValueError:
            # A message another writer left empty or cut short: drop it rather than stop the worker.
            log.warning("dropped an unreadable message from queue %s", queue)
            raise filesystem.Empty() from None


class Transport(filesystem.Transport):
    Channel = Channel


TRANSPORT_ALIASES["filesystem"] = "portal.broker:Transport"
