"""Tasks sent after a write commits, only to hurry the controller: what they ask for is in the database
already, and the periodic passes (reconcile, the batch tick; beat sends them every few seconds) carry it
on anyway, level-triggered. So a broker that is down (Redis restarting) must not fail a write that has
committed: the send is logged and dropped, and the next periodic pass does the work."""

from __future__ import annotations

import logging

from django.db import transaction
from kombu.exceptions import OperationalError

log = logging.getLogger("studio.wakeup")


def send(task, *args) -> bool:
    """`task.delay(*args)`; False (logged) when the broker cannot take it now."""
    try:
        task.delay(*args)
    except OperationalError as exc:
        log.warning("could not send %s%r (the broker is unreachable: %s); the next periodic pass does it",
                    task.name, args, exc)
        return False
    return True


def after_commit(task, *args) -> None:
    transaction.on_commit(lambda: send(task, *args))
