"""Long-running operations: a create, update or delete answers at once (202) and the
resource's state moves on in the studio. A Poller follows it, like the clouds' SDKs:

    poller = client.online_deployments.begin_create("my-endpoint", spec)
    deployment = poller.result(timeout=600)   # raises OperationFailed on Failed
"""

from __future__ import annotations

import time
from collections.abc import Callable

from studio_client.errors import NotFoundError, OperationFailed, OperationTimeout

SUCCEEDED = {"Succeeded", "Completed", "Healthy"}
FAILED = {"Failed", "Canceled", "Cancelled"}


class Poller:
    """Polls `fetch()` until the resource's `state_field` is terminal (or, for a delete, until 404).

    `on_progress(what, status_text, elapsed_seconds)` is called whenever the state (or what
    `describe` makes of the resource) changes; the CLI prints it on stderr."""

    def __init__(self, what: str, fetch: Callable[[], dict], initial: dict | None = None, *,
                 state_field: str = "provisioning_state", until_gone: bool = False, interval: float = 1.0,
                 on_progress: Callable[[str, str, float], None] | None = None,
                 describe: Callable[[dict], str] | None = None) -> None:
        self.what = what
        self._fetch = fetch
        self._resource = initial
        self._gone = until_gone and initial is None
        self.state_field = state_field
        self.until_gone = until_gone
        self.interval = interval
        self.on_progress = on_progress
        self.describe = describe
        self._last_progress: str | None = None
        self._started = time.monotonic()

    @property
    def resource(self) -> dict | None:
        """The last state seen (None once a deleted resource is gone)."""
        return self._resource

    def status(self) -> str:
        if self._gone:
            return "Deleted"
        return str((self._resource or {}).get(self.state_field) or "Unknown")

    def done(self) -> bool:
        if self.until_gone:
            return self._gone
        return self.status() in SUCCEEDED | FAILED

    def poll(self) -> None:
        """Fetch the current state once."""
        try:
            self._resource = self._fetch()
        except NotFoundError:
            if not self.until_gone:
                raise
            self._resource, self._gone = None, True
        self._report()

    def _report(self) -> None:
        if self.on_progress is None:
            return
        text = self.status()
        if self._resource is not None and self.describe is not None:
            text = f"{text} {self.describe(self._resource)}".strip()
        if text != self._last_progress:
            self._last_progress = text
            self.on_progress(self.what, text, time.monotonic() - self._started)

    def wait(self, timeout: float | None = None) -> None:
        """Block until the operation ends (Succeeded, Failed or gone) or `timeout` passes;
        never raises for a failed operation (result() does)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._report()
        while not self.done():
            if deadline is not None and time.monotonic() >= deadline:
                return
            time.sleep(self.interval if deadline is None else max(0.0, min(self.interval,
                                                                           deadline - time.monotonic())))
            self.poll()

    def result(self, timeout: float | None = None) -> dict | None:
        """The final resource (None for a delete); OperationFailed when it ended Failed,
        OperationTimeout when `timeout` passed first."""
        self.wait(timeout)
        if not self.done():
            raise OperationTimeout(self.what, self.status(), timeout or 0)
        if self.status() in FAILED:
            raise OperationFailed(self.what, self._resource, self.status())
        return self._resource


class DonePoller(Poller):
    """An operation that finished in its first answer (e.g. a 204 delete, a 200 update)."""

    def __init__(self, what: str, resource: dict | None, *, state_field: str = "provisioning_state",
                 until_gone: bool = False) -> None:
        super().__init__(what, lambda: resource or {}, resource, state_field=state_field, until_gone=until_gone)
        if until_gone:
            self._gone = True

    def done(self) -> bool:
        return True
