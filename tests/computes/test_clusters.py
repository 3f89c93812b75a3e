"""A Ray compute's state and nodes read from a real Ray head (started once for the module, the way the
studio's supervisor starts its own head, and stopped at the end with every process it started); a head
that cannot be reached, or a port that answers but is no Ray head, is Unreachable within the probe's
bound; and without a Ray compute nothing starts Ray."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from django.core.cache import cache

from endpoints_app.controller import clusters
from endpoints_app.models import Compute
from tests.computes.conftest import RAY_PORT_MIN, spare_port

pytestmark = [pytest.mark.slow, pytest.mark.django_db]


def test_a_ray_compute_shows_its_nodes_from_the_heads_own_state(ray_head, staff_api, monkeypatch):
    for name, value in ray_head.auth_env.items():  # a token-authenticated cluster: its token in Ray's variables
        monkeypatch.setenv(name, value)
    made = staff_api.post("/api/v1/computes", {"name": "lab", "type": "ray", "address": ray_head.address},
                          format="json")

    assert made.status_code == 201, made.content
    body = made.json()
    assert body["state"] == "Ready", body["state_detail"]
    (node,) = body["nodes"]
    assert node["alive"] is True and node["resources"]["CPU"] == 2 and node["free"]["CPU"] == 2
    assert node["resources"]["memory"] > 0 and node["instances"] == []
    assert node["address"].endswith(f":{RAY_PORT_MIN + 1}")  # the raylet, on the port the studio gave it
    assert Compute.objects.get(name="lab").state == "Ready"


def test_the_studios_head_refuses_a_client_without_its_token(ray_head, db, monkeypatch, tmp_path):
    """Token authentication: neither no token nor a wrong one reads the head (nor could run code on it)."""
    compute = Compute.objects.create(name="lab", type="ray", address=ray_head.address)
    seen = clusters.view(compute, use_cache=False)
    assert seen.state == "Unreachable" and "Authentication" in seen.detail and seen.nodes == [], seen
    wrong = tmp_path / "token"
    wrong.write_text("0" * 64)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(wrong))
    seen = clusters.view(compute, use_cache=False)
    assert seen.state == "Unreachable" and "Authentication" in seen.detail, seen
    token = ray_head.data_dir / "ray" / "auth-token"
    assert oct(token.stat().st_mode & 0o777) == "0o600" and len(token.read_text()) == 64


def test_a_compute_without_an_address_is_the_head_the_studio_starts(ray_head, staff_api, settings):
    # The head the fixture started is the studio's own: its ports and its data folder (the token).
    settings.STUDIO_RAY_PORT_MIN, settings.DATA_DIR = RAY_PORT_MIN, ray_head.data_dir
    made = staff_api.post("/api/v1/computes", {"name": "here", "type": "ray"}, format="json").json()
    assert made["address"] == "" and made["head_address"] == ray_head.address
    assert made["state"] == "Ready" and len(made["nodes"]) == 1


def test_a_head_nobody_answers_on_is_unreachable_at_once(db, settings):
    compute = Compute.objects.create(name="gone", type="ray", address=f"127.0.0.1:{spare_port()}")
    started = time.monotonic()
    seen = clusters.view(compute, use_cache=False)
    assert seen.state == "Unreachable" and "cannot connect" in seen.detail and seen.nodes == []
    assert time.monotonic() - started < 4
    assert Compute.objects.get(pk=compute.pk).state == "Unreachable"


def test_a_port_that_is_no_ray_head_is_unreachable_within_the_probes_bound(db, settings):
    """A listener that accepts and never answers (Ray's own client would wait tens of seconds)."""
    settings.STUDIO_RAY_PROBE_TIMEOUT_SECONDS = 2
    port = spare_port()
    listener = socket.create_server(("127.0.0.1", port))
    accepted = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        compute = Compute.objects.create(name="silent", type="ray", address=f"127.0.0.1:{port}")
        started = time.monotonic()
        seen = clusters.view(compute, use_cache=False)
        took = time.monotonic() - started
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in accepted:
            conn.close()
        listener.close()
    assert seen.state == "Unreachable" and f"127.0.0.1:{port}" in seen.detail, seen
    assert took < 2 + 2 + 1.5, took  # the probe's bound, the child's start-up, slack


def test_a_view_is_reused_for_the_cache_seconds(db, settings):
    settings.STUDIO_COMPUTE_VIEW_CACHE_SECONDS = 60
    cache.clear()
    compute = Compute.objects.create(name="gone", type="ray", address=f"127.0.0.1:{spare_port()}")
    first = clusters.view(compute)
    Compute.objects.filter(pk=compute.pk).update(state="Ready")
    assert clusters.view(compute).detail == first.detail  # not read again


@pytest.mark.django_db(transaction=True)  # the supervisor closes its database connection after asking
def test_without_a_ray_compute_the_supervisor_starts_no_ray(settings, tmp_path):
    from portal.supervisor import RayHead

    settings.DATA_DIR = tmp_path
    Compute.objects.create(name="remote", type="ray", address="10.0.0.5:6379")  # someone else's head
    owner = RayHead()
    assert owner.wanted() is False
    owner.check(time.monotonic())
    assert owner.head is None and not (tmp_path / "ray").exists()


def test_the_head_command_keeps_to_the_configured_ports(settings, tmp_path):
    settings.STUDIO_RAY_PORT_MIN, settings.DATA_DIR = 40000, tmp_path
    command = clusters.head_command()
    start = command.index("start")
    assert command[start:start + 3] == ["start", "--head", "--block"] and "--node-ip-address=127.0.0.1" in command
    # Token authentication, the token's file named (never the token itself on a command line).
    assert command[:3] == ["env", "RAY_AUTH_MODE=token", f"RAY_AUTH_TOKEN_PATH={tmp_path / 'ray' / 'auth-token'}"]
    assert (tmp_path / "ray" / "auth-token").read_text() not in " ".join(command)
    ports = [int(arg.split("=")[1]) for arg in command if arg.split("=")[0].endswith("port")]
    assert ports and all(40000 <= p <= 40099 for p in ports), command
    assert "--port=40000" in command and "--include-dashboard=false" in command


def test_each_node_lists_the_instances_the_ray_backend_placed_on_it(ray_head, db, monkeypatch, instance_types,
                                                                     workspace):
    """The Ray backend records an instance's node as the Node row `<compute>:<node id's first 16 hex digits>`."""
    from decimal import Decimal

    from endpoints_app.models import CatalogModel, Deployment, Endpoint, Instance, InstanceType, Node

    for name, value in ray_head.auth_env.items():
        monkeypatch.setenv(name, value)
    compute = Compute.objects.create(name="lab", type="ray", address=ray_head.address)
    (node,) = clusters.view(compute, use_cache=False).nodes
    row = Node.objects.create(name=f"lab:{node['node_id'][:16]}", host="127.0.0.1", cores=0, memory_gb=Decimal(0),
                              queue="ray:lab")
    model = CatalogModel.objects.create(name="iris", task="classification", format="sklearn", license="MIT")
    deployment = Deployment.objects.create(endpoint=Endpoint.objects.create(workspace=workspace, name="iris"),
                                           name="blue", model=model, compute=compute,
                                           instance_type=InstanceType.objects.first())
    Instance.objects.create(deployment=deployment, name="iris-blue-1", node=row, state="Ready")
    Instance.objects.create(deployment=deployment, name="iris-blue-0", node=row, state="Stopped")

    (shown,) = clusters.view(compute, use_cache=False).nodes
    assert shown["instances"] == ["iris-blue-1"]
    # ...and they are that compute's nodes only, not the local compute's.
    assert row.name not in [n["name"] for n in clusters.view(Compute.local(), use_cache=False).nodes]
