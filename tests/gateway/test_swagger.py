from drf_spectacular.validation import validate_schema

from endpoints_app.catalog.cards import CARDS, card
from endpoints_app.gateway.routes import DeploymentRoute, EndpointRoute
from endpoints_app.gateway.swagger import build_swagger


def _endpoint(auth_mode: str, deployment: DeploymentRoute | None) -> EndpointRoute:
    deployments = {deployment.name: deployment} if deployment else {}
    return EndpointRoute(id=1, name="flowers", kind="online", auth_mode=auth_mode, key_digests=(),
                         deployments=deployments, traffic={"blue": 100} if deployment else {}, mirror_traffic={})


def test_swagger_of_every_seeded_model_is_valid_openapi():
    for name in CARDS:
        fields = card(name)
        deployment = DeploymentRoute(
            name="blue", instances=[], request_timeout_s=5, max_concurrent_per_instance=1,
            model_name=name, model_version=1, model_task=fields["task"],
            input_schema=fields.get("input_schema") or {}, output_schema=fields.get("output_schema") or {},
            sample_request=fields.get("sample_request"),
        )
        for auth_mode in ("key", "aml_token"):
            spec = build_swagger(_endpoint(auth_mode, deployment), deployment, "http://studio/inference/flowers")
            validate_schema(spec)  # raises on an invalid document


def test_iris_swagger_carries_the_model_schema_and_example():
    fields = card("iris-classifier") if "iris-classifier" in CARDS else card(next(n for n in CARDS if "iris" in n))
    deployment = DeploymentRoute(name="blue", instances=[], request_timeout_s=5, max_concurrent_per_instance=1,
                                 input_schema=fields["input_schema"], output_schema=fields["output_schema"],
                                 sample_request=fields["sample_request"])

    spec = build_swagger(_endpoint("aml_token", deployment), deployment, "http://studio/inference/flowers")

    operation = spec["paths"]["/score"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == fields["input_schema"]
    assert operation["requestBody"]["content"]["application/json"]["example"] == fields["sample_request"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == fields["output_schema"]
    assert {"422", "429", "504"} <= operation["responses"].keys()
    assert spec["security"] == [{"Bearer": []}]


def test_endpoint_without_deployments_still_gets_a_valid_document():
    validate_schema(build_swagger(_endpoint("key", None), None, "http://studio/inference/flowers"))
