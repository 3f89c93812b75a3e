"""Usage counting for the gateway: in memory on the hot path, flushed as deltas, journaled so a killed
worker loses none.

Each gateway worker keeps counters per (endpoint, deployment, minute). A flush
swaps the live dict for an empty one (on the event loop, so no request is
between the two) and writes the old one's deltas in a worker thread, all in one
transaction (rows locked in key order, counters added with F() expressions). A
flush that fails is retried as it was, so nothing is lost.

Counts held only in memory would die with a worker killed by SIGKILL (the OOM
killer, an operator), up to a flush period of them. So every counted call is also
appended to the worker's journal segment (`<data dir>/run/usage/*.usage`), one
line written with one os.write(): once that call returns the kernel holds the line,
whatever then happens to the process. A segment holds exactly the calls of one
flush's deltas; the flush's transaction records the segment's name
(UsageJournalSegment), and only after it committed is the file removed. A worker
holds an flock on each of its segments until then; a segment whose lock can be
taken belongs to a dead worker, and any other worker drains it (parses it, adds it
in one transaction with its name). The recorded name makes that exactly once: a
segment whose name is already recorded (its worker died between commit and
unlink) is only removed. If the journal cannot be written (disk full), counting
goes on in memory and the failure is logged: those calls survive anything but the
worker's SIGKILL."""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.db import IntegrityError, close_old_connections, transaction
from django.db.models import F

from endpoints_app.metering.buckets import LATENCY_BUCKETS_MS, bucket_index, merge_codes

log = logging.getLogger("studio.gateway.metering")

N_BUCKETS = len(LATENCY_BUCKETS_MS)
# Positions in a counter list.
REQUESTS, S2XX, S4XX, S5XX, BYTES_IN, BYTES_OUT, TOKENS_IN, TOKENS_OUT, LATENCY_SUM, HIST, CODES = range(11)
COUNTER_FIELDS = (
    "requests", "status_2xx", "status_4xx", "status_5xx", "bytes_in", "bytes_out", "tokens_in", "tokens_out",
)

Key = tuple[int, str, int]  # endpoint id, deployment name ("" when none was chosen), minute (Unix time // 60)


def _new_counters() -> list:
    # CODES: requests per HTTP status code ({status: count}; keys become strings in the JSON column).
    return [0, 0, 0, 0, 0, 0, 0, 0, 0.0, [0] * N_BUCKETS, {}]


@dataclass
class Segment:
    """A journal segment this worker wrote: its file (still locked by `fd`) and the deltas of its calls."""

    path: Path
    fd: int
    deltas: dict[Key, list] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.name


class UsageCounters:
    def __init__(self, journal_dir: Path | None = None, token: str = "") -> None:
        self.current: dict[Key, list] = {}
        # The journal: None in processes that count without one (tests of the counting itself).
        self.journal_dir = Path(journal_dir) if journal_dir is not None else None
        # Names this worker's segment files: unique per process (a pid is reused; a data dir may be shared).
        self.token = token or f"{socket.gethostname()}-{os.getpid()}-{os.urandom(4).hex()}".replace("/", "-")
        self._seq = 0
        self._fd = -1
        self._path: Path | None = None
        self._journal_failed = False

    def count(
        self,
        endpoint_id: int,
        deployment: str,
        status: int,
        latency_ms: float,
        bytes_in: int,
        bytes_out: int,
        tokens_in: int = 0,
        tokens_out: int = 0,
    ) -> None:
        minute = int(time.time() // 60)
        self.add((endpoint_id, deployment, minute), status, latency_ms, bytes_in, bytes_out, tokens_in, tokens_out)
        if self.journal_dir is not None:
            self._journal(f"{endpoint_id}\t{deployment}\t{minute}\t{status}\t{latency_ms:.3f}\t{bytes_in}\t"
                          f"{bytes_out}\t{tokens_in}\t{tokens_out}\n".encode())

    def add(self, key: Key, status: int, latency_ms: float, bytes_in: int, bytes_out: int, tokens_in: int,
            tokens_out: int) -> None:
        c = self.current.get(key)
        if c is None:
            c = self.current[key] = _new_counters()
        c[REQUESTS] += 1
        if status < 300:
            c[S2XX] += 1
        elif status >= 500:
            c[S5XX] += 1
        elif status >= 400:
            c[S4XX] += 1
        c[BYTES_IN] += bytes_in
        c[BYTES_OUT] += bytes_out
        c[TOKENS_IN] += tokens_in
        c[TOKENS_OUT] += tokens_out
        c[LATENCY_SUM] += latency_ms
        c[HIST][bucket_index(latency_ms)] += 1
        codes = c[CODES]
        codes[status] = codes.get(status, 0) + 1

    def _journal(self, line: bytes) -> None:
        try:
            if self._fd < 0:
                self._fd, self._path = open_segment(self.journal_dir, f"{self.token}-{self._seq:09d}")
            # One write of a short line to an O_APPEND file: in the file whole or not at all (a full disk
            # may cut it short; drain() skips such a line).
            os.write(self._fd, line)
        except OSError as exc:
            if not self._journal_failed:
                self._journal_failed = True
                log.error("usage journal not written (%s): counts of this worker are in memory only until "
                          "the journal works again", exc)
            return
        if self._journal_failed:
            self._journal_failed = False
            log.warning("usage journal written again")

    def take(self) -> dict[Key, list]:
        """The deltas so far, leaving empty counters (call on the event loop)."""
        taken, self.current = self.current, {}
        return taken

    def take_segment(self) -> Segment | None:
        """The deltas so far with the journal segment that holds exactly their calls (call on the event loop:
        no call is counted between the two); None when nothing was counted. Without a journal the segment
        has no file (fd -1)."""
        deltas = self.take()
        if not deltas:
            return None
        segment = Segment(self._path or Path(f"{self.token}-{self._seq:09d}"), self._fd, deltas)
        self._seq += 1
        self._fd, self._path = -1, None
        return segment


SUFFIX = ".usage"


def journal_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "run" / "usage"


def open_segment(folder: Path, stem: str) -> tuple[int, Path]:
    """A new segment file, already locked when it appears under its name (a drainer never sees it
    unlocked while its worker lives)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}{SUFFIX}"
    temp = folder / f"{stem}.new"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(temp, path)
    except OSError:
        os.close(fd)
        raise
    return fd, path


def write_segment(segment: Segment) -> bool:
    """Add a segment's deltas and record its name in one transaction (blocking; run in a thread); then
    remove its file. False (file kept, still locked) when the database refused: retry it later."""
    from endpoints_app.models import Endpoint, UsageJournalSegment

    close_old_connections()
    try:
        with transaction.atomic():
            if segment.fd >= 0 or segment.path.is_absolute():
                try:
                    with transaction.atomic():
                        UsageJournalSegment.objects.create(name=segment.name)
                except IntegrityError:
                    # Already in: its worker died after the commit and before removing the file.
                    log.info("usage journal segment %s was already counted", segment.name)
                    segment.deltas = {}
            # Usage of deleted endpoints is dropped (their usage rows went with them). One deleted between
            # this read and the commit fails the commit (a deferred foreign key): the retry leaves it out.
            ids = {key[0] for key in segment.deltas}
            alive = set(Endpoint.all_objects.filter(pk__in=ids).values_list("pk", flat=True))
            for key in sorted(segment.deltas):
                if key[0] in alive:
                    _add_delta(key, segment.deltas[key])
    except Exception:
        log.exception("usage flush failed; will retry")
        return False
    done(segment)
    return True


def done(segment: Segment) -> None:
    if segment.fd >= 0 or segment.path.is_absolute():
        segment.path.unlink(missing_ok=True)
    if segment.fd >= 0:
        os.close(segment.fd)  # releases the lock, after the file is gone
        segment.fd = -1


def read_segment(path: Path, fd: int) -> dict[Key, list]:
    """The deltas of a segment file's whole lines (a line cut short by a full disk is skipped)."""
    counters = UsageCounters()
    with os.fdopen(os.dup(fd), "rb") as fh:
        fh.seek(0)
        data = fh.read()
    for line in data.split(b"\n")[:-1]:
        parts = line.split(b"\t")
        if len(parts) != 9:
            log.warning("skipping a damaged line of usage journal %s", path.name)
            continue
        try:
            endpoint_id, minute, status = int(parts[0]), int(parts[2]), int(parts[3])
            latency = float(parts[4])
            numbers = [int(p) for p in parts[5:]]
        except ValueError:
            log.warning("skipping a damaged line of usage journal %s", path.name)
            continue
        counters.add((endpoint_id, parts[1].decode(), minute), status, latency, *numbers)
    return counters.current


def drain(folder: Path, own_token: str = "") -> int:
    """Add the segments of dead workers in `folder` (those whose lock can be taken); returns how many
    calls they held. Blocking: run in a thread."""
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return 0
    calls = 0
    for name in names:
        if own_token and name.startswith(f"{own_token}-"):
            continue
        path = folder / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue  # flushed and removed by its worker meanwhile
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)  # its worker lives and will flush it
            continue
        if not name.endswith(SUFFIX):
            # A segment whose worker died before naming it (open_segment): it holds no call.
            path.unlink(missing_ok=True)
            os.close(fd)
            continue
        segment = Segment(path, fd, read_segment(path, fd))
        if write_segment(segment):
            # Empty when it was counted already (its worker died between its commit and removing the file).
            held = sum(delta[REQUESTS] for delta in segment.deltas.values())
            calls += held
            if held:
                log.warning("usage journal %s of a dead gateway worker drained: %d calls", name, held)
        else:
            os.close(fd)
    return calls


def prune_segment_names(days: int = 7) -> None:
    """Forget recorded segment names after `days`: their files were removed long before."""
    from django.utils import timezone

    from endpoints_app.models import UsageJournalSegment

    UsageJournalSegment.objects.filter(applied_at__lt=timezone.now() - dt.timedelta(days=days)).delete()


def _add_delta(key: Key, delta: list) -> None:
    from endpoints_app.models import UsageMinute

    endpoint_id, deployment, minute = key
    _add_to_row(UsageMinute, endpoint_id, deployment, dt.datetime.fromtimestamp(minute * 60, tz=dt.UTC), delta)


def _add_to_row(UsageMinute, endpoint_id: int, deployment: str, when: dt.datetime, delta: list) -> None:
    lookup = {"endpoint_id": endpoint_id, "deployment": deployment, "minute": when}
    for attempt in range(2):
        try:
            with transaction.atomic():
                row = (
                    UsageMinute.objects.select_for_update()
                    .filter(**lookup)
                    .values("pk", "latency_histogram", "status_codes")
                    .first()
                )
                if row is None:
                    # A unique (endpoint, deployment, minute) constraint makes a concurrent
                    # create fail here; the retry then finds the row and adds to it.
                    with transaction.atomic():
                        UsageMinute.objects.create(
                            **lookup,
                            **{name: delta[i] for i, name in enumerate(COUNTER_FIELDS)},
                            latency_ms_sum=delta[LATENCY_SUM],
                            latency_histogram=list(delta[HIST]),
                            status_codes=merge_codes({}, delta[CODES]),
                        )
                    return
                histogram = list(row["latency_histogram"] or [])
                histogram += [0] * (N_BUCKETS - len(histogram))
                histogram = [a + b for a, b in zip(histogram, delta[HIST], strict=False)]
                # Like the histogram: merged under the row lock, so concurrent flushes add up exactly.
                codes = merge_codes(dict(row["status_codes"] or {}), delta[CODES])
                UsageMinute.objects.filter(pk=row["pk"]).update(
                    **{name: F(name) + delta[i] for i, name in enumerate(COUNTER_FIELDS)},
                    latency_ms_sum=F("latency_ms_sum") + delta[LATENCY_SUM],
                    latency_histogram=histogram,
                    status_codes=codes,
                )
                return
        except IntegrityError:
            if attempt == 1:
                raise
            # Either another worker created the row first (retry adds to it) or the endpoint is gone.
            from endpoints_app.models import Endpoint

            if not Endpoint.all_objects.filter(pk=endpoint_id).exists():
                raise
