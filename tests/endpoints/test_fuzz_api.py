"""The REST API fuzzed from its own OpenAPI schema (/api/schema/) with schemathesis: every
operation, valid and invalid inputs, as the owner of a workspace with an endpoint, a
deployment and a model. No answer may be a server error, and every 4xx carries the
contract's error shape {"error": {"code", "message", "field"?}}.

Examples are derandomized (the same cases each run) so CI is stable; FUZZ_EXAMPLES raises
the count per operation and mode for a longer hunt."""

import json
import logging
import os
import time
import traceback

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from endpoints_app.models import ApiToken

pytestmark = pytest.mark.slow

DEFAULT_EXAMPLES = 12
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", DEFAULT_EXAMPLES))
# Path parameters that name things that exist, so cases get past the 404 for a missing parent.
KNOWN = {"ws": "team", "name": "iris", "deployment_name": "blue", "username": "rita", "version": 1}


def _known_paths(case, use_known: bool, own_token_id: int):
    if case.path_parameters and str(case.path_parameters.get("token_id")) == str(own_token_id):
        case.path_parameters["token_id"] = own_token_id + 1  # keep the token the cases are sent with
    if use_known and case.path_parameters:
        for key, value in KNOWN.items():
            if key in case.path_parameters:
                case.path_parameters[key] = value
        if "/models/" in case.path and "name" in case.path_parameters:
            case.path_parameters["name"] = "iris-classifier"
    return case


class _LastError(logging.Handler):
    """Keeps the traceback the API logged for its last 500, so a failure shows where it came from."""

    text = ""

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.text = "".join(traceback.format_exception(*record.exc_info))[-1500:]


def _shape_problem(response) -> str | None:
    if response.status_code >= 500:
        return f"server error {response.status_code}"
    if 400 <= response.status_code < 500:
        try:
            body = json.loads(response.content)
        except ValueError:
            return f"{response.status_code} body is not JSON"
        error = body.get("error") if isinstance(body, dict) else None
        if not (isinstance(error, dict) and isinstance(error.get("code"), str)
                and isinstance(error.get("message"), str)
                and set(error) <= {"code", "message", "field"}):
            return f"{response.status_code} body is not the error shape"
    return None


def _fuzz(operation, mode, token: str, token_id: int, failures: dict, last_error: _LastError) -> int:
    """Run one operation's cases in one generation mode; note the first case of each problem."""
    count = 0

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    @given(st.tuples(operation.as_strategy(generation_mode=mode), st.booleans()))
    def run(pair):
        nonlocal count
        case = _known_paths(*pair, token_id)
        response = case.call(headers={"Authorization": token})
        count += 1
        problem = _shape_problem(response)
        if problem:
            failures.setdefault((operation.label, problem), (
                case.method, case.formatted_path, case.query, case.body, response.content[:300],
                last_error.text if response.status_code >= 500 else ""))

    run()
    return count


def test_the_api_answers_fuzzing_without_server_errors_and_in_the_error_shape(
    owner_api, owner, reader, endpoint_factory, capsys,
):
    endpoint_factory("iris", deployments=("blue",))
    token = owner_api._credentials["HTTP_AUTHORIZATION"]
    token_id = ApiToken.objects.get(user=owner).pk
    # As Django's test client does: the WSGI handler would close the test's database connection
    # at the end of each request.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    last_error = _LastError()
    logging.getLogger("endpoints_app.api.errors").addHandler(last_error)
    try:
        schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())
        operations = [result.ok() for result in schema.get_all_operations()]
        started = time.monotonic()
        examples, failures = 0, {}
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                examples += _fuzz(operation, mode, token, token_id, failures, last_error)
    finally:
        logging.getLogger("endpoints_app.api.errors").removeHandler(last_error)
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)

    elapsed = time.monotonic() - started
    with capsys.disabled():
        print(f"\nfuzz: {len(operations)} operations, {examples} examples, {len(failures)} failures, "
              f"{elapsed:.0f} s")
        for (label, problem), sample in failures.items():
            print(f"  {label}: {problem}: {sample}")
    assert not failures
    assert owner_api.get("/api/v1/workspaces").status_code == 200  # the cases ran authenticated throughout
