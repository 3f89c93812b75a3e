"""StudioClient: typed methods for every resource of the studio's REST API (OpenAPI schema: /api/schema/).

    from studio_client import StudioClient

    client = StudioClient()                       # STUDIO_URL / STUDIO_TOKEN / STUDIO_WORKSPACE or `studio login`
    client.online_endpoints.begin_create({"name": "my-endpoint"}).result()
    client.online_deployments.begin_create("my-endpoint", {"name": "blue", "model": "iris-classifier:1"}).result()
    client.online_endpoints.invoke("my-endpoint", {"input_data": {...}})

Writes that provision return a Poller (`.result(timeout)`, `.wait()`); lists follow pagination;
errors raise ApiError subclasses carrying the API's code, message and field."""

from __future__ import annotations

import json as jsonlib
import os
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

from studio_client import config as config_mod
from studio_client._transport import Response, Transport, seg
from studio_client.errors import ConfigurationError
from studio_client.poller import DonePoller, Poller

TYPE_CHECKING = False  # typing costs start-up time; the annotations are strings anyway
if TYPE_CHECKING:
    from typing import Any, BinaryIO

ProgressCallback = Callable[[str, str, float], None]


class _Resource:
    def __init__(self, client: StudioClient) -> None:
        self._client = client

    @property
    def _t(self) -> Transport:
        return self._client.transport

    def _ws(self, path: str = "") -> str:
        return f"/api/v1/workspaces/{seg(self._client.workspace)}/{path}".rstrip("/")

    def _poller(self, what: str, path: str, response: Response, *, state_field: str = "provisioning_state",
                describe: Callable[[dict], str] | None = None) -> Poller:
        body = response.json() if response.content and response.is_json() else None
        if response.status_code == 202 or (isinstance(body, dict) and body.get(state_field) in
                                           ("Creating", "Updating", "Deleting", "NotStarted", "Queued",
                                            "Preparing", "Running", "Starting")):
            return Poller(what, lambda: self._t.json("GET", path), body, state_field=state_field,
                          interval=self._client.poll_interval, on_progress=self._client.on_progress,
                          describe=describe)
        return DonePoller(what, body, state_field=state_field)

    def _delete_poller(self, what: str, path: str, response: Response,
                       describe: Callable[[dict], str] | None = None) -> Poller:
        if response.status_code == 204 or not response.content:
            return DonePoller(what, None, until_gone=True)
        return Poller(what, lambda: self._t.json("GET", path), response.json(), until_gone=True,
                      interval=self._client.poll_interval, on_progress=self._client.on_progress, describe=describe)


def _instances_text(deployment: dict) -> str:
    instances = deployment.get("instances") or []
    if not instances:
        return ""
    ready = sum(1 for i in instances if i.get("state") in ("Ready", "Running", "ready", "running"))
    return f"({ready}/{len(instances)} instances ready)"


def _body(spec: dict, drop: Iterable[str] = ("$schema", "kind")) -> dict:
    return {k: v for k, v in spec.items() if k not in set(drop)}


# -- workspace-level -----------------------------------------------------------------------------------------

class Workspaces(_Resource):
    def list(self) -> list[dict]:
        """The caller's workspaces with their role."""
        return list(self._t.pages("/api/v1/workspaces"))


class Members(_Resource):
    def list(self) -> list[dict]:
        return list(self._t.pages(self._ws("members")))

    def get(self, username: str) -> dict:
        return self._t.json("GET", self._ws(f"members/{seg(username)}"))

    def add(self, username: str, role: str) -> dict:
        return self._t.json("POST", self._ws("members"), json={"username": username, "role": role})

    def update(self, username: str, role: str) -> dict:
        return self._t.json("PATCH", self._ws(f"members/{seg(username)}"), json={"role": role})

    def remove(self, username: str) -> None:
        self._t.json("DELETE", self._ws(f"members/{seg(username)}"))


class Models(_Resource):
    def list(self, *, task: str | None = None, format: str | None = None, deployment_kind: str | None = None,
             search: str | None = None, name: str | None = None, license: str | None = None) -> list[dict]:
        """Latest version of each model (every version of one model with `name`), all pages."""
        params = {"task": task, "format": format, "deployment_kind": deployment_kind, "search": search,
                  "name": name, "license": license}
        return list(self._t.pages(self._ws("models"), params))

    def get(self, name: str, version: int | None = None, registry: str | None = None) -> dict:
        params = {k: v for k, v in {"version": version, "registry": registry}.items() if v is not None}
        return self._t.json("GET", self._ws(f"models/{seg(name)}"), params=params or None)

    def create(self, name: str, path: str | os.PathLike, *, format: str | None = None, task: str | None = None,
               description: str | None = None, scoring_script: str | None = None,
               sample_request: str | None = None, type: str | None = None, environment: str | None = None) -> dict:
        """Register a model: a scikit-learn joblib/pickle, an ONNX file, a zip holding score.py, or (type
        mlflow_model) an MLflow model's folder or zip. A folder is zipped on the way. `sample_request`
        (JSON text) is what its Test tab opens with."""
        data = {"name": name}
        for key, value in (("format", format), ("task", task), ("description", description),
                           ("scoring_script", scoring_script), ("sample_request", sample_request), ("type", type),
                           ("environment", environment)):
            if value:
                data[key] = value
        if Path(path).is_dir():
            import io
            import zipfile

            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
                for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
                    zf.write(file, file.relative_to(path).as_posix())
            buffer.seek(0)
            return self._t.json("POST", self._ws("models"), data=data,
                                files={"file": (Path(path).name + ".zip", buffer)})
        with open(path, "rb") as fh:
            return self._t.json("POST", self._ws("models"), data=data, files={"file": (Path(path).name, fh)})


    def update(self, name: str, version: int, *, sample_request: str | dict | None = None,
               description: str | None = None) -> dict:
        """Attach a sample request (JSON text or an object) or a description to a registered model version."""
        body: dict[str, Any] = {}
        if sample_request is not None:
            body["sample_request"] = sample_request
        if description is not None:
            body["description"] = description
        return self._t.json("PATCH", self._ws(f"models/{seg(name)}/versions/{int(version)}"), json=body)

    def delete(self, name: str, version: int) -> None:
        """Delete a registered model version (refused while a deployment uses it)."""
        self._t.json("DELETE", self._ws(f"models/{seg(name)}/versions/{int(version)}"))


class InstanceTypes(_Resource):
    def list(self) -> list[dict]:
        return list(self._t.pages("/api/v1/instance-types"))


class Computes(_Resource):
    """Computes: where deployments run (the built-in `local`, Ray clusters). Visible to everyone; IT
    (staff) creates, updates and deletes them. Each carries its `state` and `nodes`."""

    def list(self) -> list[dict]:
        return list(self._t.pages("/api/v1/computes"))

    def get(self, name: str) -> dict:
        return self._t.json("GET", f"/api/v1/computes/{seg(name)}")

    def create(self, spec: dict) -> dict:
        return self._t.json("POST", "/api/v1/computes", json=_body(spec))

    def update(self, name: str, changes: dict) -> dict:
        return self._t.json("PATCH", f"/api/v1/computes/{seg(name)}", json=_body(changes))

    def delete(self, name: str) -> None:
        self._t.json("DELETE", f"/api/v1/computes/{seg(name)}")


class Tokens(_Resource):
    """The caller's API tokens (stored hashed; a new token is shown once)."""

    def list(self) -> list[dict]:
        return list(self._t.pages("/api/v1/tokens"))

    def create(self, expires_in_days: int | None = None) -> dict:
        body = {} if expires_in_days is None else {"expires_in_days": expires_in_days}
        return self._t.json("POST", "/api/v1/tokens", json=body)

    def delete(self, token_id: int | str) -> None:
        self._t.json("DELETE", f"/api/v1/tokens/{seg(token_id)}")


# -- online and batch endpoints ------------------------------------------------------------------------------

class _Endpoints(_Resource):
    collection = ""
    label = ""

    def _path(self, name: str = "") -> str:
        return self._ws(f"{self.collection}/{seg(name)}" if name else self.collection)

    def list(self) -> list[dict]:
        return list(self._t.pages(self._path()))

    def get(self, name: str) -> dict:
        return self._t.json("GET", self._path(name))

    def exists(self, name: str) -> bool:
        from studio_client.errors import NotFoundError

        try:
            self.get(name)
            return True
        except NotFoundError:
            return False

    def begin_create(self, spec: dict) -> Poller:
        body = _body(spec)
        name = body.get("name")
        response = self._t.request("POST", self._path(), json=body)
        return self._poller(f"{self.label} {name}", self._path(str(name)), response)

    def begin_update(self, name: str, changes: dict) -> Poller:
        body = _body(changes)
        response = self._t.request("PATCH", self._path(name), json=body)
        return self._poller(f"{self.label} {name}", self._path(name), response)

    def begin_delete(self, name: str) -> Poller:
        response = self._t.request("DELETE", self._path(name))
        return self._delete_poller(f"{self.label} {name}", self._path(name), response)

    def list_keys(self, name: str) -> dict:
        return self._t.json("POST", f"{self._path(name)}/list-keys")

    def regenerate_keys(self, name: str, key_type: str = "primary") -> dict:
        return self._t.json("POST", f"{self._path(name)}/regenerate-keys", json={"key_type": key_type})

    def get_token(self, name: str) -> dict:
        """`{access_token, expiry_time_utc}` for an aml_token endpoint."""
        return self._t.json("POST", f"{self._path(name)}/token")

    def get_credentials(self, name: str, endpoint: dict | None = None) -> dict:
        """Keys for a key endpoint, a fresh token for an aml_token endpoint, and for an aad_token endpoint
        the identity token this client signs in with (a service principal's, studio_client.identity)."""
        endpoint = endpoint or self.get(name)
        if endpoint.get("auth_mode") == "aad_token":
            if self._t.token_provider is None:
                raise ConfigurationError(f"endpoint '{name}' takes identity tokens: sign in as a service principal "
                                         "(`studio login --issuer URL --client-id ID --client-secret SECRET`)")
            return {"access_token": self._t.token_provider(), "token_type": "Bearer"}
        if endpoint.get("auth_mode") == "aml_token":
            return self.get_token(name)
        return self.list_keys(name)


class OnlineEndpoints(_Endpoints):
    collection = "online-endpoints"
    label = "online endpoint"

    def invoke(self, name: str, body: bytes | str | dict | list, *, deployment_name: str | None = None,
               path: str = "score") -> Any:
        """Score through the gateway, as a client application would (Bearer key or token)."""
        endpoint = self.get(name)
        credentials = self.get_credentials(name, endpoint)
        secret = credentials.get("access_token") or credentials.get("primary_key")
        headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        if deployment_name:
            headers["azureml-model-deployment"] = deployment_name
        url = endpoint["scoring_uri"]
        if path != "score":
            url = url.rsplit("/", 1)[0] + "/" + path.lstrip("/")
        data = body if isinstance(body, (bytes, str)) else jsonlib.dumps(body)
        # Through the gateway with the endpoint's key: the API token must not travel there.
        response = self._t.request("POST", url, data=data, headers=headers, timeout=self._t.timeout * 5)
        if response.is_json():
            return response.json()
        return response.text

    def mirror_comparison(self, name: str) -> dict:
        return self._t.json("GET", f"{self._path(name)}/mirror-comparison")


class BatchEndpoints(_Endpoints):
    collection = "batch-endpoints"
    label = "batch endpoint"

    def begin_invoke(self, name: str, *, input_path: str, input_type: str = "uri_folder",
                     deployment_name: str | None = None, settings: dict | None = None,
                     inputs: dict | None = None, outputs: dict | None = None) -> Poller:
        """Start a batch job (= POST jobs); the poller follows the job's `status`. `input_path` is a data
        asset id or azureml://datastores/<ds>/paths/<path>; `inputs` adds a score.py's other inputs and
        `outputs` places the output ({"score": {"type": "uri_file", "path": "azureml://..."}})."""
        return self._client.jobs.begin_create(name, input_path=input_path, input_type=input_type,
                                              deployment_name=deployment_name, settings=settings,
                                              inputs=inputs, outputs=outputs)


class _Deployments(_Resource):
    endpoints = ""
    label = ""

    def _path(self, endpoint: str, name: str = "") -> str:
        base = f"{self.endpoints}/{seg(endpoint)}/deployments"
        return self._ws(f"{base}/{seg(name)}" if name else base)

    def list(self, endpoint: str) -> list[dict]:
        return list(self._t.pages(self._path(endpoint)))

    def get(self, endpoint: str, name: str) -> dict:
        return self._t.json("GET", self._path(endpoint, name))

    def begin_create(self, endpoint: str, spec: dict) -> Poller:
        body = _body(spec, ("$schema", "kind", "endpoint_name"))
        name = body.get("name")
        response = self._t.request("POST", self._path(endpoint), json=body)
        return self._poller(f"{self.label} {endpoint}/{name}", self._path(endpoint, str(name)), response,
                            describe=_instances_text)

    def begin_update(self, endpoint: str, name: str, changes: dict) -> Poller:
        body = _body(changes, ("$schema", "kind", "endpoint_name"))
        response = self._t.request("PATCH", self._path(endpoint, name), json=body)
        return self._poller(f"{self.label} {endpoint}/{name}", self._path(endpoint, name), response,
                            describe=_instances_text)

    def begin_delete(self, endpoint: str, name: str) -> Poller:
        response = self._t.request("DELETE", self._path(endpoint, name))
        return self._delete_poller(f"{self.label} {endpoint}/{name}", self._path(endpoint, name), response)

    def get_logs(self, endpoint: str, name: str, lines: int = 100, instance: str | None = None) -> str:
        params: dict[str, Any] = {"lines": lines}
        if instance:
            params["instance"] = instance
        text = self._t.json("GET", f"{self._path(endpoint, name)}/logs", params=params)
        return text if isinstance(text, str) else jsonlib.dumps(text)


def check_deployments(client: StudioClient, deployments: list[dict]) -> dict:
    """Quota and node capacity for every deployment of a plan at once (nothing is written); raises the
    API's 409 naming what does not fit."""
    return client.transport.json("POST", f"/api/v1/workspaces/{seg(client.workspace)}/deployment-check",
                                 json={"deployments": deployments})


class OnlineDeployments(_Deployments):
    endpoints = "online-endpoints"
    label = "online deployment"


class BatchDeployments(_Deployments):
    endpoints = "batch-endpoints"
    label = "batch deployment"


JOB_SETTINGS = ("mini_batch_size", "instance_count", "max_concurrency_per_instance", "error_threshold",
                "output_file_name", "output_columns")


class Jobs(_Resource):
    """Batch jobs: one invocation of a batch endpoint. Job names are unique in the workspace, so
    every call but create also works without the endpoint (the workspace's `jobs` routes)."""

    def _path(self, endpoint: str | None, job: str = "") -> str:
        base = f"batch-endpoints/{seg(endpoint)}/jobs" if endpoint else "jobs"
        return self._ws(f"{base}/{seg(job)}" if job else base)

    def list(self, endpoint: str | None = None, *, status: str | None = None, limit: int | None = None) -> list[dict]:
        params = {k: v for k, v in {"status": status, "limit": limit}.items() if v is not None}
        return list(self._t.pages(self._path(endpoint), params or None))

    def get(self, endpoint: str | None, name: str) -> dict:
        return self._t.json("GET", self._path(endpoint, name))

    def begin_create(self, endpoint: str, *, input_path: str, input_type: str = "uri_folder",
                     deployment_name: str | None = None, settings: dict | None = None,
                     inputs: dict | None = None, outputs: dict | None = None) -> Poller:
        body: dict[str, Any] = {"inputs": {**(inputs or {}),
                                           "input_data": {"type": input_type, "path": input_path}}}
        if outputs:
            body["outputs"] = outputs
        if deployment_name:
            body["deployment_name"] = deployment_name
        if settings:
            body["settings"] = settings
        job = self._t.json("POST", self._path(endpoint), json=body)
        name = str(job.get("name") or job.get("id"))
        return Poller(f"job {endpoint}/{name}", lambda: self.get(endpoint, name), job, state_field="status",
                      interval=self._client.poll_interval, on_progress=self._client.on_progress,
                      describe=_job_progress)

    def poller(self, endpoint: str | None, name: str) -> Poller:
        """Follow a job that already runs."""
        return Poller(f"job {name}", lambda: self.get(endpoint, name), self.get(endpoint, name),
                      state_field="status", interval=self._client.poll_interval,
                      on_progress=self._client.on_progress, describe=_job_progress)

    def cancel(self, endpoint: str | None, name: str) -> dict:
        return self._t.json("POST", f"{self._path(endpoint, name)}/cancel")

    def download(self, endpoint: str | None, name: str, file: str, destination: str | os.PathLike) -> Path:
        """Stream one output file of a job to `destination` (a folder or a file path)."""
        target = Path(destination)
        if target.is_dir():
            # A score.py's files keep their folders under the destination, never above it.
            inner = PurePosixPath(file)
            if inner.is_absolute() or ".." in inner.parts:
                raise ValueError(f"output file {file!r} points outside {target}")
            target = target.joinpath(*inner.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
        response = self._t.request("GET", f"{self._path(endpoint, name)}/outputs/{seg(file)}", stream=True)
        tmp = target.with_name(f".{target.name}.part")
        with open(tmp, "wb") as fh:
            for chunk in response.iter_content(chunk_size=1 << 16):
                fh.write(chunk)
        os.replace(tmp, target)
        return target


def _job_progress(job: dict) -> str:
    done, total = job.get("mini_batches_done"), job.get("mini_batches_total")
    if done is not None and total:
        failed = job.get("mini_batches_failed") or 0
        return f"({done}/{total} mini-batches{f', {failed} failed' if failed else ''})"
    return ""


class Data(_Resource):
    """Data assets (uri_folder): what batch jobs read."""

    def list(self) -> list[dict]:
        return list(self._t.pages(self._ws("data")))

    def get(self, name: str, version: int | None = None) -> dict:
        path = self._ws(f"data/{seg(name)}")
        if version is not None:
            path += f"/versions/{int(version)}"
        return self._t.json("GET", path)

    def create_reference(self, name: str, path: str, type: str = "uri_folder", description: str = "") -> dict:
        """A version that points at a datastore path (azureml://datastores/<ds>/paths/<path>), not copied."""
        body = {"name": name, "path": path, "type": type}
        if description:
            body["description"] = description
        return self._t.json("POST", self._ws("data"), json=body)

    def create(self, name: str, files: Iterable[str | os.PathLike]) -> dict:
        """Upload one or more files (a folder is expanded to the files in it) as a new version."""
        paths: list[Path] = []
        for item in files:
            p = Path(item)
            paths.extend(sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p])
        if not paths:
            raise ConfigurationError("data create needs at least one file")
        handles: list[BinaryIO] = []
        try:
            parts = []
            for p in paths:
                fh = open(p, "rb")
                handles.append(fh)
                parts.append(("files", (p.name, fh)))
            return self._t.json("POST", self._ws("data"), data={"name": name}, files=parts)
        finally:
            for fh in handles:
                fh.close()


class Datastores(_Resource):
    """Datastores: the built-in workspaceblobstore, Azure Blob containers, S3 buckets, allowed folders.
    Answers never carry credentials."""

    def _path(self, name: str = "") -> str:
        return self._ws(f"datastores/{seg(name)}" if name else "datastores")

    def list(self) -> list[dict]:
        return list(self._t.pages(self._path()))

    def get(self, name: str) -> dict:
        return self._t.json("GET", self._path(name))

    def create(self, spec: dict) -> dict:
        return self._t.json("POST", self._path(), json=_body(spec))

    def delete(self, name: str) -> None:
        self._t.json("DELETE", self._path(name))

    def browse(self, name: str, path: str = "") -> list[dict]:
        """The folders and files directly under `path`."""
        return self._t.json("GET", f"{self._path(name)}/browse", params={"path": path} if path else None)


class Environments(_Resource):
    """Environments: the packages a model needs, built once per distinct content."""

    def list(self, name: str | None = None) -> list[dict]:
        """Latest version of each environment (every version of one with `name`)."""
        return [_with_build_state(e) for e in self._t.pages(self._ws("environments"), {"name": name} if name else None)]

    def get(self, name: str, version: str | int | None = None) -> dict:
        path = self._ws(f"environments/{seg(name)}")
        if version is not None:
            path += f"/versions/{seg(str(version))}"
        return _with_build_state(self._t.json("GET", path))

    def build_log(self, name: str, version: str | int) -> str:
        text = self._t.json("GET", self._ws(f"environments/{seg(name)}/versions/{seg(str(version))}/build-log"))
        return text if isinstance(text, str) else jsonlib.dumps(text)

    def begin_create(self, spec: dict) -> Poller:
        """Create a version; the poller follows its build (NotStarted, Building, Succeeded or Failed)."""
        created = _with_build_state(self._t.json("POST", self._ws("environments"), json=spec))
        name, version = created["name"], created["version"]
        fetch = lambda: self.get(name, version)  # noqa: E731
        if created["build_state"] in ("Succeeded", "Failed"):
            return DonePoller(f"environment {name}:{version}", created, state_field="build_state")
        return Poller(f"environment {name}:{version}", fetch, created, state_field="build_state",
                      interval=self._client.poll_interval, on_progress=self._client.on_progress)


def _with_build_state(env: dict) -> dict:
    """The environment with its build's state at the top (what a Poller follows)."""
    return {**env, "build_state": (env.get("build") or {}).get("state")}


class MarketplaceSubscriptions(_Resource):
    def _path(self, name: str = "") -> str:
        return self._ws(f"marketplace-subscriptions/{seg(name)}" if name else "marketplace-subscriptions")

    def list(self) -> list[dict]:
        return list(self._t.pages(self._path()))

    def get(self, name: str) -> dict:
        return self._t.json("GET", self._path(name))

    def create(self, model_id: str, name: str | None = None) -> dict:
        body = {"model_id": model_id}
        if name:
            body["name"] = name
        return self._t.json("POST", self._path(), json=body)

    def delete(self, name: str) -> None:
        self._t.json("DELETE", self._path(name))


class ServerlessEndpoints(_Resource):
    def _path(self, name: str = "") -> str:
        return self._ws(f"serverless-endpoints/{seg(name)}" if name else "serverless-endpoints")

    def list(self) -> list[dict]:
        return list(self._t.pages(self._path()))

    def get(self, name: str) -> dict:
        return self._t.json("GET", self._path(name))

    def begin_create(self, name: str, model_id: str) -> Poller:
        response = self._t.request("POST", self._path(), json={"name": name, "model_id": model_id})
        return self._poller(f"serverless endpoint {name}", self._path(name), response)

    def begin_delete(self, name: str) -> Poller:
        response = self._t.request("DELETE", self._path(name))
        return self._delete_poller(f"serverless endpoint {name}", self._path(name), response)

    def list_keys(self, name: str) -> dict:
        return self._t.json("POST", f"{self._path(name)}/list-keys")

    def regenerate_keys(self, name: str, key_type: str = "primary") -> dict:
        return self._t.json("POST", f"{self._path(name)}/regenerate-keys", json={"key_type": key_type})


class StudioClient:
    """One studio, one workspace. Arguments left out come from the environment or the config file."""

    def __init__(self, url: str | None = None, token: str | None = None, workspace: str | None = None, *,
                 timeout: float = 60, retries: int = 3, poll_interval: float = 1.0,
                 on_progress: ProgressCallback | None = None, user_agent: str | None = None,
                 token_provider=None) -> None:
        """`token_provider`: a callable returning a current identity token (e.g.
        studio_client.identity.ClientCredentials), used instead of an API token."""
        settings = config_mod.resolve(url, token, workspace)
        provider = token_provider
        if provider is not None:
            settings.token = None
        elif not settings.token and settings.credentials:
            from studio_client.identity import ClientCredentials

            provider = ClientCredentials(**settings.credentials)
        if not settings.token and provider is None:
            raise ConfigurationError(
                "no API token: set STUDIO_TOKEN, run `studio login`, or pass token= "
                "(`python manage.py drf_create_token <user>` prints one)"
            )
        self.url = settings.url.rstrip("/")
        self.workspace = settings.workspace
        self.poll_interval = poll_interval
        self.on_progress = on_progress
        self.transport = Transport(self.url, settings.token, timeout=timeout, retries=retries, token_provider=provider,
                                   **({"user_agent": user_agent} if user_agent else {}))
        self.workspaces = Workspaces(self)
        self.members = Members(self)
        self.models = Models(self)
        self.instance_types = InstanceTypes(self)
        self.computes = Computes(self)
        self.tokens = Tokens(self)
        self.online_endpoints = OnlineEndpoints(self)
        self.online_deployments = OnlineDeployments(self)
        self.batch_endpoints = BatchEndpoints(self)
        self.batch_deployments = BatchDeployments(self)
        self.jobs = Jobs(self)
        self.data = Data(self)
        self.datastores = Datastores(self)
        self.environments = Environments(self)
        self.marketplace_subscriptions = MarketplaceSubscriptions(self)
        self.serverless_endpoints = ServerlessEndpoints(self)

    def list_inference_keys(self) -> dict:
        """Keys of the workspace's unified inference endpoint (`/models/...`)."""
        return self.transport.json("POST", f"/api/v1/workspaces/{seg(self.workspace)}/list-inference-keys")

    def usage(self, *, endpoint: str | None = None, deployment: str | None = None, from_: str | None = None,
              to: str | None = None, interval: str | None = None) -> dict:
        params = {"endpoint": endpoint, "deployment": deployment, "from": from_, "to": to, "interval": interval}
        return self.transport.json("GET", f"/api/v1/workspaces/{seg(self.workspace)}/usage",
                                   params={k: v for k, v in params.items() if v is not None})
