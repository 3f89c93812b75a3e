"""docs/deploy.md, run: every ```sh block of the production guide, in order, in one shell, against this
machine's PostgreSQL and Redis (a database of its own, made and dropped here), with nginx as the TLS proxy
when it is installed. Between the blocks the test checks what the guide promises: the processes answer, the
proxy serves https, a backup restores what was there when it was taken."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.live import free_port, stop_session_worker

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "deploy.md"
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = os.environ.get("CELERY_BROKER_URL", "")

pytestmark = pytest.mark.slow


def blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", GUIDE.read_text(), flags=re.S)


def services_up() -> str | None:
    if not os.environ.get("DATABASE_URL", "").startswith("postgres") or not REDIS_URL.startswith("redis"):
        return "runs with the PostgreSQL and Redis configuration (.ci/run), whose services it uses"
    if subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432", "-q"]).returncode != 0:
        return "no PostgreSQL on 127.0.0.1:5432"
    if subprocess.run(["redis-cli", "-h", "127.0.0.1", "ping"], capture_output=True).returncode != 0:
        return "no Redis on 127.0.0.1:6379"
    return None


# What the test runs after the block of that index (counted from 0), in the same shell.
CHECKS = {
    # After the processes started: a worker registered its node (it heartbeats to the database).
    5: """
for _ in $(seq 120); do
  n=$(psql "$DATABASE_URL" -Atc "SELECT count(*) FROM endpoints_app_node WHERE last_heartbeat IS NOT NULL")
  [ "$n" -ge 1 ] && break; sleep 0.5
done
[ "$n" -ge 1 ] || { echo "no worker registered its node"; exit 1; }
""",
    # Before the backup: a row and a file to find again.
    6: """
python manage.py shell -c "from endpoints_app.models import Workspace; Workspace.objects.create(name='before-backup')"
echo kept > "$STUDIO_DATA_DIR/marker.txt"
""",
    # After the backup: what came later is lost by the restore; the guide says stop everything first.
    7: """
python manage.py shell -c "from endpoints_app.models import Workspace as W
W.objects.filter(name='before-backup').delete()"
rm "$STUDIO_DATA_DIR/marker.txt"
kill $(jobs -p) 2>/dev/null || true
for _ in $(seq 120); do [ -z "$(jobs -pr)" ] && break; sleep 0.5; done
if [ -n "$(jobs -pr)" ]; then
  echo "guide: still running 60 s after SIGTERM:"; ps -o pid,stat,etime,args -p "$(jobs -pr | paste -sd,)"
  kill -9 $(jobs -pr) 2>/dev/null || true; exit 1
fi
wait || true
""",
    # After the restore: both are back.
    8: """
[ "$(psql "$DATABASE_URL" -Atc "SELECT count(*) FROM endpoints_app_workspace WHERE name = 'before-backup'")" = 1 ]
[ "$(cat "$STUDIO_DATA_DIR/marker.txt")" = kept ]
""",
}


def test_every_command_of_the_production_guide_runs(tmp_path):
    reason = services_up()
    if reason:
        pytest.skip(reason)
    found = blocks()
    assert len(found) == 10, f"the guide has {len(found)} sh blocks; CHECKS expects 10 (update both together)"
    # The session's own Redis database (its live worker is stopped below), not the guide's 0 and 1.
    redis_db = REDIS_URL.rstrip("/").rsplit("/", 1)[-1] if REDIS_URL.count("/") > 2 else "0"
    db = f"guide_{uuid.uuid4().hex[:10]}"
    nginx = shutil.which("nginx")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("STUDIO_", "DJANGO_")) and k not in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL")}
    env.update(
        STUDIO_HOME=str(REPO), STUDIO_ENV_FILE=str(tmp_path / "etc" / "studio.env"), STUDIO_DB=db,
        POSTGRES_ADMIN_URL=ADMIN_URL, REDIS_BASE="redis://127.0.0.1:6379", STUDIO_DATA_DIR=str(tmp_path / "data"),
        STUDIO_HOSTNAME="studio.test", WEB_PORT=str(free_port()), GATEWAY_PORT=str(free_port()),
        TLS_PORT=str(free_port()), NGINX_DIR=str(tmp_path / "nginx"), BACKUP_DIR=str(tmp_path / "backup"),
        STUDIO_ADMIN_PASSWORD="guide-admin-pass",
        # Every wait here is bounded: a statement that waits for a lock (pg_restore --clean while something
        # still holds the database) fails after a minute saying so, rather than hanging the run.
        PGOPTIONS="-c lock_timeout=60s",
        PATH=f"{REPO / '.venv' / 'bin'}:{env.get('PATH', '')}",
    )
    for name in ("STUDIO_INSTANCE_PORT_MIN", "STUDIO_INSTANCE_PORT_MAX"):
        if name in os.environ:
            env[name] = os.environ[name]
    script = ["set -euo pipefail"]
    for index, block in enumerate(found):
        # The guide's Redis database numbers (0 and 1) become this run's own one.
        block = block.replace("$REDIS_BASE/0", f"$REDIS_BASE/{redis_db}").replace("$REDIS_BASE/1",
                                                                                    f"$REDIS_BASE/{redis_db}")
        if "nginx" in block and nginx is None:
            script.append("echo 'nginx is not installed: the TLS proxy block is not run'")
        else:
            script.append(block)
        script.append(CHECKS.get(index, ""))
        script.append(f'echo; echo "guide: block {index} done at $SECONDS s"')
    path = tmp_path / "guide.sh"
    path.write_text("\n".join(script))
    stop_session_worker()  # it would take this installation's tasks from the shared Redis queue
    log = tmp_path / "guide.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(["bash", str(path)], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    try:
        try:
            proc.wait(timeout=400)
        except subprocess.TimeoutExpired:
            seen = log.read_text(errors="replace")
            done = [line for line in seen.splitlines() if line.startswith("guide:")]
            pytest.fail(f"the guide did not finish in 400 s; last block done: {done[-1] if done else 'none'}; "
                        f"its output ends:\n{seen[-4000:]}")
        output = log.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # gunicorn and celery of a run that failed half way
        except ProcessLookupError:
            pass
        pid_file = tmp_path / "nginx" / "nginx.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text().strip()), signal.SIGQUIT)
        subprocess.run(["psql", ADMIN_URL, "-qc", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'], check=False)
    print("\n".join(line for line in output.splitlines() if line.startswith("guide:")))
    assert proc.returncode == 0, output[-4000:]
    assert '"status": "ok"' in output or '"status":"ok"' in output
    if nginx is not None:
        assert output.count('"status"') >= 2, "the https call through the proxy did not answer"
