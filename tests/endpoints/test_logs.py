"""Reading a deployment's log: probe lines left out, newest first on request."""

import pytest

from tests.live import make_custom_model

pytestmark = pytest.mark.django_db


def test_it_leaves_probe_lines_out_of_a_llama_cpp_log(workspace, tmp_path):
    """llama.cpp's server logs every readiness probe; the log shows a count instead of the lines."""
    from endpoints_app.models import CatalogModel, Deployment, Endpoint, Instance, InstanceType, Node
    from endpoints_app.services.deployments import read_deployment_logs

    model = make_custom_model(workspace, tmp_path / "code")
    endpoint = Endpoint.objects.create(workspace=workspace, name="chatty", kind="online")
    deployment = Deployment.objects.create(endpoint=endpoint, name="blue", model=CatalogModel.objects.get(pk=model.pk),
                                           instance_type=InstanceType.objects.first())
    log = tmp_path / "inst.log"
    probe = 'INFO:     127.0.0.1:5000 - "GET /v1/models HTTP/1.1" 200 OK\n'
    log.write_text("llama_model_loader: loaded\n" + probe * 40 + "chat request failed\n" + probe * 3)
    node = Node.objects.create(name="logs-node", cores=2, memory_gb=4, queue="node.logs-node")
    Instance.objects.create(deployment=deployment, name="blue-1", node=node, log_path=str(log), state="Ready")
    text = read_deployment_logs(deployment, lines=10)
    assert '"GET /v1/models' not in text
    assert "(43 readiness-probe lines hidden)" in text
    assert text.index("llama_model_loader") < text.index("chat request failed")
    newest_first = read_deployment_logs(deployment, lines=10, newest_first=True)
    assert newest_first.index("chat request failed") < newest_first.index("llama_model_loader")


TRACEBACK_LOG = """server starting
Traceback (most recent call last):
  File "score.py", line 3, in init
    load()
KeyError: 'weights'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "server.py", line 9, in main
    handler.load()
RuntimeError: init() failed
server exiting
"""


def test_newest_first_keeps_a_traceback_in_reading_order():
    from endpoints_app.services.deployments import log_entries

    lines = TRACEBACK_LOG.splitlines(keepends=True)
    entries = log_entries(lines)
    assert [e[0].strip() for e in entries] == ["server starting", "Traceback (most recent call last):",
                                                "server exiting"]
    assert "".join(entries[1]).endswith("RuntimeError: init() failed\n")
    newest = "".join(line for entry in reversed(entries) for line in entry)
    assert newest.index("server exiting") < newest.index("Traceback") < newest.index("KeyError") \
        < newest.index("RuntimeError") < newest.index("server starting")
