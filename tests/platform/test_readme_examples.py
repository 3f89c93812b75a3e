"""The README's "REST API by example" block works verbatim: each curl line is run with bash against
a live server, and each answers with success."""

import re
import subprocess
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from endpoints_app.models import ApiToken, CatalogModel
from tests.live import register_test_node

pytestmark = pytest.mark.django_db(transaction=True)
README = Path(__file__).resolve().parents[2] / "README.md"


def _examples() -> list[str]:
    text = README.read_text()
    section = text.split("## REST API by example", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S).group(1)
    commands = re.sub(r"\\\n\s*", "", block).splitlines()
    return [c for c in commands if c.startswith("curl ")]


def test_the_readmes_api_examples_work_verbatim(live_server, workspace, owner):
    register_test_node()  # the deployment's capacity check needs a live node
    CatalogModel.objects.create(name="iris-classifier", version=1, task="classification", format="sklearn",
                                license="BSD-3-Clause", artifact_path="models/iris.joblib",
                                deployment_kinds=["online", "batch"])
    get_user_model().objects.create_user("alice", password="x-for-tests")
    env = {"STUDIO": live_server.url, "WS": workspace.name, "TOKEN": ApiToken.objects.create(user=owner)[1],
           "PATH": "/usr/bin:/bin"}
    examples = _examples()
    assert len(examples) == 6
    for command in examples:
        done = subprocess.run(["bash", "-c", command + ' -s -o /dev/stderr -w "%{http_code}"'], env=env,
                              capture_output=True, text=True, timeout=30)
        assert done.stdout in ("200", "201", "202"), (command, done.stdout, done.stderr)
