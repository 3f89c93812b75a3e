"""PostgreSQL restarted under load: a studio whose database is on a PostgreSQL server of its own (initdb'd
and started here on a free port, never the machine's shared one; its rows copied from the test database),
stopped and started again while calls come in and a rollout is under way. The gateway's hot path needs no
database; the rollout asked for before the restart finishes after it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.faults import wait_until
from tests.faults.conftest import running_studio
from tests.live import database_url, free_port

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True, available_apps=["django.contrib.sessions"])]

BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), None)


class PrivatePostgres:
    """A PostgreSQL cluster in a folder of its own, run as the `postgres` user (initdb refuses root)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()

    def _as_postgres(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True,
                              check=check, timeout=60, cwd="/")

    def init(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        shutil.chown(self.folder, "postgres", "postgres")
        self._as_postgres(str(BIN / "initdb"), "-D", str(self.folder / "data"), "-U", "postgres", "--auth=trust",
                          "--no-sync")

    def start(self) -> None:
        self._as_postgres(str(BIN / "pg_ctl"), "-D", str(self.folder / "data"), "-l", str(self.folder / "log"), "-w",
                          "-t", "30", "-o", f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 "
                          "-c fsync=off", "start")

    def stop(self) -> None:
        self._as_postgres(str(BIN / "pg_ctl"), "-D", str(self.folder / "data"), "-w", "-t", "30", "-m", "fast",
                          "stop", check=False)

    def url(self, name: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def copy_of(self, source_url: str, name: str = "studio") -> str:
        """A database `name` here holding what `source_url` holds now (schema and rows)."""
        subprocess.run(["psql", self.url(), "-qc", f'CREATE DATABASE "{name}"'], check=True, capture_output=True,
                       timeout=30)
        dump = subprocess.run(["pg_dump", "--no-owner", source_url], check=True, capture_output=True, timeout=120)
        subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", self.url(name)], input=dump.stdout, check=True,
                       capture_output=True, timeout=120)
        return self.url(name)


@pytest.fixture(scope="module")
def postgres_studio(django_db_setup, django_db_blocker):
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only (the embedded default runs on SQLite)")
    if BIN is None or shutil.which("runuser") is None or os.geteuid() != 0:
        pytest.skip("no PostgreSQL server binaries (or not root) to start a private one")
    server = PrivatePostgres(Path("/tmp") / f"studio-faults-pg-{os.getpid()}")
    server.init()
    server.start()
    try:
        with running_studio(django_db_blocker, "faults-pg-studio",
                            before_start=lambda: {"DATABASE_URL": server.copy_of(database_url())}) as studio:
            yield studio, server
    finally:
        server.stop()
        shutil.rmtree(server.folder, ignore_errors=True)


def test_a_restarted_postgresql_costs_no_answered_call_and_no_rollout(postgres_studio):
    studio, server = postgres_studio
    # The rollout is recorded before the restart; carrying it on needs the database back.
    load, took, back = studio.outage(server.stop, server.start, scale_while_down=False)
    print(f"PostgreSQL down 3 s; the rollout finished {took:.1f} s after it was back; calls: {dict(load.counts())}")
    wait_until(lambda: studio.call().status_code == 200, 10, "a call answered after the restart")
    studio.matrix_row("PostgreSQL restarted (own server; down 3 s, mid-rollout)", load, back)
