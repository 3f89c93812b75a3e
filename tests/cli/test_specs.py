"""Spec validation before any call, offline: every failure class names the field's path and the
file's line and exits 2; the studio is never contacted (STUDIO_URL points at a closed port, so a
call would exit 1 instead). Covers the kinds whose API other branches build (batch, serverless,
data, subscriptions) as well as online ones."""

import subprocess
import sys
from pathlib import Path

import pytest

from studio_client import specs
from tests.live import ROOT, free_port

EXAMPLES = ROOT / "examples"


def studio(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "STUDIO_URL": f"http://127.0.0.1:{free_port()}",
           "STUDIO_TOKEN": "offline", "STUDIO_WORKSPACE": "team", "STUDIO_CONFIG": str(tmp_path / "none.json")}
    return subprocess.run([sys.executable, "-m", "studio_client", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


BROKEN = [
    # (command, file text, expected path, expected line, words in the message)
    (["online-endpoint", "create"], "name: a\nauth_mode: key\nowner: me\n", "owner", 3, "unknown field"),
    (["online-endpoint", "create"], "name: a\nauth_mode: password\n", "auth_mode", 2, "key, aml_token"),
    (["online-endpoint", "create"], "auth_mode: key\n", "name", 1, "is required"),
    (["online-endpoint", "update"], "name: a\ntraffic:\n  blue: lots\n", "traffic.blue", 3, "whole number"),
    (["online-deployment", "create"], "name: b\nendpoint_name: a\nmodel: m:1\ninstance_count: two\n",
     "instance_count", 4, "whole number"),
    (["online-deployment", "create"], "name: b\nendpoint_name: a\ninstance_count: 1\n", "model", 1, "is required"),
    (["online-deployment", "create"],
     "name: b\nendpoint_name: a\nmodel: m:1\nrequest_settings:\n  request_timeout_ms: 100\n  retries: 3\n",
     "request_settings.retries", 6, "unknown field"),
    (["online-deployment", "create"],
     "name: b\nendpoint_name: a\nmodel: m:1\nscale_settings:\n  type: magic\n", "scale_settings.type", 5,
     "default, target_utilization"),
    (["online-deployment", "create"], "name: b\nendpoint_name: a\nmodel: m:1\nreadiness_probe: 5\n",
     "readiness_probe", 4, "a mapping"),
    (["online-deployment", "create"], "name: b\nendpoint_name: a\nmodel: m:1\nname: c\n", "name", 4, "twice"),
    (["online-deployment", "create"], "kind: online-endpoint\nname: b\n", "kind", 1, "not a online-deployment"),
    (["online-deployment", "create"], "name: b\nmodel: m:1\n", "endpoint_name", 1, "-e/--endpoint-name"),
    (["batch-endpoint", "create"], "name: e\ndefaults:\n  deployment: main\n", "defaults.deployment", 3,
     "unknown field"),
    (["batch-deployment", "create"], "name: d\nendpoint_name: e\nmodel: m:1\noutput_action: everything\n",
     "output_action", 4, "append_row, summary_only"),
    (["batch-deployment", "create"],
     "name: d\nendpoint_name: e\nmodel: m:1\nretry_settings:\n  max_retries: many\n", "retry_settings.max_retries",
     5, "whole number"),
    (["batch-endpoint", "invoke"],
     "endpoint_name: e\ninputs:\n  input_data:\n    path: studio:data/x/versions/1\n"
     "settings:\n  mini_batch_size: [1]\n",
     "settings.mini_batch_size", 6, "a list"),
    # A job takes the deployment's retry settings and output action too, checked like them.
    (["batch-endpoint", "invoke"],
     "endpoint_name: e\ninputs:\n  input_data:\n    path: studio:data/x/versions/1\n"
     "settings:\n  output_action: summary_only\n  retry_settings:\n    timeout: soon\n",
     "settings.retry_settings.timeout", 8, "whole number"),
    (["batch-endpoint", "invoke"], "endpoint_name: e\ninputs:\n  input_data:\n    type: uri_folder\n",
     "inputs.input_data.path", 4, "is required"),
    (["serverless-endpoint", "create"], "name: s\n", "model_id", 1, "is required"),
    (["serverless-endpoint", "create"], "name: s\nmodel_id: 7\n", "model_id", 2, "a string"),
    (["marketplace-subscription", "create"], "name: s\nmodel_id: x\nplan: gold\n", "plan", 3, "unknown field"),
    (["data", "create"], "name: inputs\ntype: folder\npath: .\n", "type", 2, "uri_folder, uri_file"),
    (["data", "create"], "name: inputs\n", "path", 1, "is required"),
]


@pytest.mark.parametrize(("command", "text", "path", "line", "words"), BROKEN,
                         ids=[f"{c[0]}-{p}" for c, _t, p, _l, _w in BROKEN])
def test_it_names_the_field_and_line_of_a_broken_spec_and_exits_2(tmp_path, command, text, path, line, words):
    (tmp_path / "spec.yml").write_text(text)
    result = studio(tmp_path, *command, "-f", "spec.yml")
    assert result.returncode == 2, result.stderr
    assert f"spec.yml:{line}: {path}:" in result.stderr and words in result.stderr, result.stderr
    assert "cannot reach" not in result.stderr


def test_it_reports_yaml_syntax_errors_with_their_line(tmp_path):
    (tmp_path / "spec.yml").write_text("name: a\ndescription: [unclosed\nauth_mode: key\n")
    result = studio(tmp_path, "online-endpoint", "create", "-f", "spec.yml")
    assert result.returncode == 2 and "not valid YAML" in result.stderr and "spec.yml:3" in result.stderr


def test_it_checks_set_overrides_like_the_file(tmp_path):
    (tmp_path / "d.yml").write_text("name: b\nendpoint_name: a\nmodel: m:1\n")
    result = studio(tmp_path, "online-deployment", "create", "-f", "d.yml", "--set", "instance_count=many")
    assert result.returncode == 2 and "instance_count: must be a whole number" in result.stderr
    bad = studio(tmp_path, "online-deployment", "update", "-e", "a", "-n", "b", "--set", "novalue")
    assert bad.returncode == 2 and "--set expects path.to.field=value" in bad.stderr
    traffic = studio(tmp_path, "online-endpoint", "update", "-n", "a", "--traffic", "blue=ninety")
    assert traffic.returncode == 2 and "--traffic" in traffic.stderr


def test_a_valid_spec_gets_as_far_as_the_network(tmp_path):
    """The same commands with good specs pass validation and fail only on the closed port (exit 1)."""
    (tmp_path / "s.yml").write_text("kind: serverless-endpoint\nname: s\nmodel_id: studio://registries/studio/"
                                    "models/smollm2-135m-instruct/versions/1\n")
    result = studio(tmp_path, "serverless-endpoint", "create", "-f", "s.yml")
    assert result.returncode == 1 and "cannot reach the studio" in result.stderr


@pytest.mark.parametrize(("command", "message"), [
    (["online-endpoint", "show"], "-n/--name"),
    (["online-endpoint", "invoke", "-n", "a"], "--request-file"),
    (["online-deployment", "show", "-n", "b"], "-e/--endpoint-name"),
    (["batch-endpoint", "invoke", "-n", "e"], "--input"),
    (["job", "show", "-e", "e"], "-n/--name"),
    (["data", "create", "-n", "x"], "--path"),
    (["data", "create", "-n", "x", "--path", "missing.csv"], "no such file"),
    (["serverless-endpoint", "delete", "-n", "s"], "--yes"),
    (["marketplace-subscription", "delete", "-n", "s"], "--yes"),
    (["job", "cancel", "-e", "e", "-n", "j"], "--yes"),
    (["members", "add", "-u", "u"], "--role"),
    (["model", "create", "-n", "m"], "--path"),
])
def test_it_refuses_a_command_line_that_cannot_work_with_exit_2(tmp_path, command, message):
    result = studio(tmp_path, *command)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_every_example_spec_is_valid_for_its_kind():
    files = sorted(EXAMPLES.rglob("*.yml"))
    assert len(files) > 40
    kinds = set()
    for f in files:
        spec = specs.load_file(f)
        kind = specs.kind_of(spec, str(f))
        assert kind is not None, f
        specs.validate(spec, kind, str(f))
        kinds.add(kind)
    assert kinds == set(specs.KINDS)


def test_an_az_ml_schema_url_declares_the_kind():
    spec = specs.load_yaml("$schema: https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json"
                           "\nname: blue\nmodel: m:1\n")
    assert specs.kind_of(spec) == "online-deployment"
    with pytest.raises(specs.SpecError, match="not a online-endpoint spec"):
        specs.validate(spec, "online-endpoint")


def test_apply_refuses_a_folder_with_an_undeclared_kind_before_any_call(tmp_path):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "a.yml").write_text("kind: online-endpoint\nname: a\n")
    (tmp_path / "specs" / "b.yml").write_text("name: b\nmodel: m:1\n")
    result = studio(tmp_path, "apply", "-f", "specs")
    assert result.returncode == 2 and "b.yml:1: kind: declare what this is" in result.stderr
    (tmp_path / "specs" / "b.yml").write_text("kind: online-deployment\nname: b\nmodel: m:1\n")
    result = studio(tmp_path, "apply", "-f", "specs", "--dry-run")
    assert result.returncode == 2 and "b.yml:1: endpoint_name: is required" in result.stderr
    (tmp_path / "specs" / "b.yml").write_text("kind: online-endpoint\nname: a\n")
    result = studio(tmp_path, "apply", "-f", "specs", "--dry-run")
    assert result.returncode == 2 and "also declared in" in result.stderr


@pytest.mark.parametrize(("answer", "status", "words"), [("n\n", 2, "nothing deleted"), ("y\n", 1, "cannot reach")])
def test_delete_without_yes_asks_on_a_terminal(tmp_path, answer, status, words):
    """On a terminal delete asks first: "n" stops before any call (exit 2), "y" goes on to the
    studio (here a closed port, so exit 1)."""
    import os
    import pty

    leader, follower = pty.openpty()
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "STUDIO_URL": f"http://127.0.0.1:{free_port()}",
           "STUDIO_TOKEN": "offline", "STUDIO_WORKSPACE": "team", "STUDIO_CONFIG": str(tmp_path / "none.json")}
    proc = subprocess.Popen([sys.executable, "-m", "studio_client", "online-endpoint", "delete", "-n", "blue-ep"],
                            stdin=follower, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    os.close(follower)
    os.write(leader, answer.encode())
    _, err = proc.communicate(timeout=60)
    os.close(leader)
    assert "Delete online endpoint 'blue-ep'" in err
    assert proc.returncode == status and words in err, err
