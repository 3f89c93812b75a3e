"""Redis restarted under load: a studio whose broker and cache are a Redis server of its own (started here
on a free port, never the machine's shared one), stopped and started again while calls come in and a
rollout is under way. The gateway's hot path needs no Redis; the rollout finishes once Redis is back."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from django.conf import settings

from bench.faults import wait_until
from tests.faults.conftest import running_studio
from tests.live import free_port

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True, available_apps=["django.contrib.sessions"])]


class PrivateRedis:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.folder)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        wait_until(self.answers, 20, f"the private Redis on port {self.port}", interval=0.1)

    def answers(self) -> bool:
        done = subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True)
        return done.stdout.strip() == "PONG"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


@pytest.fixture(scope="module")
def redis_studio(django_db_setup, django_db_blocker):
    if not settings.CELERY_BROKER_URL.startswith("redis"):
        pytest.skip("Redis only (the embedded default has no Redis)")
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server to start a private one")
    redis = PrivateRedis(Path(settings.DATA_DIR) / "faults-redis")
    redis.start()
    try:
        with running_studio(django_db_blocker, "faults-redis-studio", CELERY_BROKER_URL=redis.url(0),
                            REDIS_URL=redis.url(1)) as studio:
            yield studio, redis
    finally:
        redis.stop()


def test_a_restarted_redis_costs_no_answered_call_and_no_rollout(redis_studio):
    studio, redis = redis_studio
    # A rollout asked for while the broker is down: the API answers, the rollout waits for Redis.
    load, took, back = studio.outage(redis.stop, redis.start, scale_while_down=True)
    print(f"Redis down 3 s; the rollout asked for meanwhile finished {took:.1f} s after Redis was back; "
          f"calls: {dict(load.counts())}")
    studio.matrix_row("Redis restarted (own server; down 3 s, a rollout asked for meanwhile)", load, back)
