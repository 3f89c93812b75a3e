"""A deployment with its own environment on a Ray compute (a real three-node cluster on 127.0.0.1,
tests/cluster/conftest.py): the studio builds the environment once (sandboxed, from the package index,
as tests/environments do; uv's cache in the data dir keeps repeat runs fast), every node fetches it
packed, once, over the signed internal route, and each instance answers with the environment's
package. A node that cannot get it fails the instance with the environment's name and the reason."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
import requests

from endpoints_app.controller import ray_backend
from endpoints_app.models import EnvironmentBuild, Instance, InstanceState
from endpoints_app.runtime import ray_node
from tests.cluster.conftest import BASE
from tests.live import make_custom_model, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# six 1.16.0: the studio's own Python has 1.17.0, so the answer says which one the server imported.
ENVIRONMENT = {"pip_requirements": ["six==1.16.0"]}
SCORE_PY = '''
import six


def init():
    print("six model init done", flush=True)


def run(raw_data):
    return {"six": six.__version__, "file": six.__file__}
'''


def _deploy(api, endpoint: str, name: str, model: str, count: int, timeout: float) -> dict:
    assert api.post(BASE, {"name": endpoint}, format="json").status_code == 201
    body = {"name": name, "model": model, "instance_type": "Standard_DS1_v2", "instance_count": count,
            "compute": "cluster", "environment": ENVIRONMENT}
    answer = api.post(f"{BASE}/{endpoint}/deployments", body, format="json")
    assert answer.status_code == 202, answer.content
    return wait_for(
        lambda: (d := api.get(f"{BASE}/{endpoint}/deployments/{name}").json())["provisioning_state"]
        in ("Succeeded", "Failed") and d, timeout=timeout, what=f"{endpoint}/{name} provisioned")


def test_a_deployment_with_its_own_environment_answers_from_it_on_every_node(cluster, owner_api, workspace,
                                                                              tmp_path, monkeypatch):
    model = make_custom_model(workspace, tmp_path / "code", name="six-model", source=SCORE_PY)
    deployment = _deploy(owner_api, "envs", "blue", f"{model.name}:1", 3, timeout=300)
    assert deployment["provisioning_state"] == "Succeeded", deployment["error"]
    rows = list(Instance.objects.filter(deployment__name="blue", state=InstanceState.READY).select_related("node"))
    assert len({r.node.name for r in rows}) == 3

    # Every instance answers with the environment's six, imported from its node's own copy.
    key = owner_api.post(f"{BASE}/envs/list-keys").json()["primary_key"]
    node_dirs = {str(n.folder) for n in cluster.nodes}
    seen: set[str] = set()

    def answered_from_every_node() -> bool:
        answer = requests.post(f"{cluster.web}/inference/envs/score", json={"data": [1]},
                               headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["six"] == "1.16.0", body
        assert "/env/venv/lib/" in body["file"], body
        seen.update(d for d in node_dirs if body["file"].startswith(d + "/sandbox/"))
        return seen == node_dirs

    wait_for(answered_from_every_node, timeout=30, what="an answer from each node's instance")

    # Each node unpacked the packed build once, by its content hash; nothing half-made is left.
    build = EnvironmentBuild.objects.get()
    archive = build.folder / "venv.tar"
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    for node in cluster.nodes:
        root = node.folder / "environments"
        assert sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock")) == [digest]
        assert (root / digest / "venv" / "bin" / "python").exists()

    # Two instances starting on one node at once: one fetch, and both get the whole venv.
    monkeypatch.setenv("STUDIO_NODE_DIR", str(tmp_path / "fresh-node"))
    entry = ray_backend.environment_entry(rows[0], str(build.venv), "env/venv")
    results: list[tuple[Path, bool]] = []
    threads = [threading.Thread(target=lambda: results.append(ray_node.environment(entry, cluster.web)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 2 and results[0][0] == results[1][0]
    assert sorted(fetched for _venv, fetched in results) == [False, True]
    assert (results[0][0] / "lib").is_dir()

    # A node that cannot get the environment (its archive on the studio's disk is damaged): the instance
    # fails, and the deployment's error names the environment and the reason.
    archive.write_bytes(b"damaged")
    try:
        failed = _deploy(owner_api, "envs-broken", "blue", f"{model.name}:1", 1, timeout=120)
    finally:
        archive.unlink()
    assert failed["provisioning_state"] == "Failed"
    env_name = deployment["environment"].removeprefix("azureml:")
    assert (f"EnvironmentUnavailable: environment {env_name}: this node could not get it from the studio: the "
            "archive it fetched is not usable") in failed["error"], failed["error"]
    assert 'File "' not in failed["error"]  # the error's own words, not Ray's traceback
