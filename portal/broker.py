"""kombu's filesystem transport with an atomic put.

kombu writes a message by opening `<name>.msg` and then writing it, while a consumer moves
any `*.msg` it lists and reads it: on a loaded machine the consumer can take the file between
the open and the write, read nothing, and the worker's consumer dies on the empty JSON
(JSONDecodeError in filesystem.Channel._get). Here the message is written under a name the
consumer ignores and renamed into place, which is atomic within one directory."""

from __future__ import annotations

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        target = os.path.join(self.data_folder_out, name)
        # A leading dot: _get matches `filename.partition('.')[2] == '<queue>.msg'`, never this name.
        tmp = os.path.join(self.data_folder_out, f".{name}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(tmp, target)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {target!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
