"""`studio compute create|update|show|list|delete` against a real web process: IT's round trip from a
compute.yml, a user who is not IT refused (exit 1 with the API's message), and specs that fail
validation (exit 2, with the field and the file's line; other compute types named with Ray)."""

from __future__ import annotations

import pytest

from endpoints_app.models import ApiToken, Compute
from tests.cli.conftest import ok, run_studio, start_web
from tests.computes.conftest import spare_port

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def web(workspace, tmp_path):
    yield from start_web(tmp_path)


def test_it_walks_a_ray_compute_through_every_command(web, staff, reader, tmp_path):
    it = ApiToken.objects.create(user=staff)[1]
    address = f"127.0.0.1:{spare_port()}"
    (tmp_path / "compute.yml").write_text(f"name: lab\ntype: ray\naddress: {address}\ndescription: the lab\n")

    made = ok(run_studio(web, it, "compute", "create", "-f", "compute.yml", cwd=tmp_path))
    assert made["name"] == "lab" and made["state"] == "Unreachable" and made["address"] == address
    assert [c["name"] for c in ok(run_studio(web, it, "compute", "list", cwd=tmp_path))] == ["lab", "local"]
    table = run_studio(web, it, "compute", "list", "-o", "table", cwd=tmp_path).stdout
    assert "lab" in table and "Unreachable" in table
    assert ok(run_studio(web, it, "compute", "show", "-n", "local", cwd=tmp_path))["state"] in ("Ready", "Starting")
    updated = ok(run_studio(web, it, "compute", "update", "-n", "lab", "--set", "description=moved", cwd=tmp_path))
    assert updated["description"] == "moved"

    # Not IT: refused by the API (exit 1), nothing changed.
    user = ApiToken.objects.create(user=reader)[1]
    refused = run_studio(web, user, "compute", "delete", "-n", "lab", "--yes", cwd=tmp_path)
    assert refused.returncode == 1 and "IT" in refused.stderr
    built_in = run_studio(web, it, "compute", "delete", "-n", "local", "--yes", cwd=tmp_path)
    assert built_in.returncode == 1 and "built-in" in built_in.stderr

    assert ok(run_studio(web, it, "compute", "delete", "-n", "lab", "--yes", cwd=tmp_path))["deleted"] is True
    assert list(Compute.objects.values_list("name", flat=True)) == ["local"]


def test_a_spec_that_fails_validation_exits_2_naming_the_field_and_line(web, staff, tmp_path):
    it = ApiToken.objects.create(user=staff)[1]
    (tmp_path / "k8s.yml").write_text("name: k8s\n# the cloud's attached cluster\ntype: kubernetes\n")
    (tmp_path / "extra.yml").write_text("name: lab\ntype: ray\nnodes: 3\n")
    (tmp_path / "nameless.yml").write_text("type: ray\n")

    k8s = run_studio(web, it, "compute", "create", "-f", "k8s.yml", cwd=tmp_path)
    assert k8s.returncode == 2 and "k8s.yml:3: type:" in k8s.stderr and "Ray" in k8s.stderr, k8s
    extra = run_studio(web, it, "compute", "create", "-f", "extra.yml", cwd=tmp_path)
    assert extra.returncode == 2 and "extra.yml:3: nodes" in extra.stderr, extra
    nameless = run_studio(web, it, "compute", "create", "-f", "nameless.yml", cwd=tmp_path)
    assert nameless.returncode == 2 and "name" in nameless.stderr, nameless
    # A rule the studio holds (the address's form) comes back from the API: exit 1 naming the field.
    (tmp_path / "bad-address.yml").write_text("name: lab\ntype: ray\naddress: ray://10.0.0.5:10001\n")
    address = run_studio(web, it, "compute", "create", "-f", "bad-address.yml", cwd=tmp_path)
    assert address.returncode == 1 and "field: address" in address.stderr, address
    assert not Compute.objects.exclude(name="local").exists()
