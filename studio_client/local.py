"""Try a deployment on your own machine before anything is provisioned (`--local`).

    studio online-deployment create --local -f deployment.yml [--port 5001]   # foreground; Ctrl-C stops
    studio online-endpoint invoke --local -n my-endpoint --request-file sample.json

`create --local` builds the deployment's environment here, with uv, into ~/.cache/studio/local/envs/
(once per distinct content, with the model server's own packages pinned as the studio pins them), and
runs the studio's own model server on 127.0.0.1 with the same scoring contract and errors. The spec's
`model` and `code_configuration.code` are local paths (relative to the YAML file), its `environment`
inline (`conda_file` or `pip_requirements`). `invoke --local` reads the port and the server's secret
from ~/.cache/studio/local/<endpoint>.json (mode 0600). No Django import: the client stays light."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from studio_client.errors import StudioError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

ROOT = Path(__file__).resolve().parents[1]  # the checkout the CLI runs from: the model server lives here


class LocalError(StudioError):
    """A local run that cannot start, or a call the local server refused (exit status 1, with the message)."""


def home() -> Path:
    path = Path(os.environ.get("STUDIO_LOCAL_HOME") or Path.home() / ".cache" / "studio" / "local")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _local_path(value: Any, base: Path, field: str) -> Path:
    if isinstance(value, dict):
        value = value.get("path")
    if not isinstance(value, str) or not value:
        raise LocalError(f"{field}: --local needs a local path (the files on this machine)")
    path = (base / value).resolve()
    if not path.exists():
        raise LocalError(f"{field}: no such file or folder: {path}")
    return path


def _requirements(environment: Any) -> list[str]:
    """The environment's requirement lines (conda file's pip list and packages, or a pip list)."""
    import yaml

    if environment in (None, "", {}):
        return []
    if not isinstance(environment, dict):
        raise LocalError("environment: --local needs an inline environment (conda_file or pip_requirements)")
    if "image" in environment:
        raise LocalError("environment.image: container images are not supported yet")
    pip = environment.get("pip_requirements")
    if pip:
        return [str(x).strip() for x in pip if str(x).strip()]
    conda = environment.get("conda_file")
    conda = yaml.safe_load(conda) if isinstance(conda, str) else conda
    lines: list[str] = []
    for dep in (conda or {}).get("dependencies") or []:
        if isinstance(dep, dict):
            lines += [str(x) for x in dep.get("pip") or []]
            continue
        match = re.match(r"^([A-Za-z0-9_.-]+)\s*(=*)\s*(.*)$", str(dep).split("::")[-1].strip())
        if not match or match[1] in ("python", "pip", "setuptools", "wheel"):
            continue
        name, equals, version = match[1], match[2], match[3]
        # Conda's `numpy=1.26` is any 1.26.x, `numpy==1.26.4` exactly it (as the studio reads them).
        if not version:
            lines.append(name)
        elif equals == "==" or version.count(".") >= 2 or "*" in version:
            lines.append(f"{name}=={version}")
        else:
            lines.append(f"{name}=={version}.*")
    return lines


def build_environment(requirements: list[str], log=sys.stderr) -> str:
    """The python of a venv holding `requirements` plus the server's pins (built once per content)."""
    from endpoints_app.runtime.pins import server_requirements

    if not requirements:
        return sys.executable
    lines = sorted(set(requirements)) + server_requirements()
    key = hashlib.sha256(json.dumps(lines).encode()).hexdigest()[:16]
    venv = home() / "envs" / key
    python = venv / "bin" / "python"
    if (venv / ".built").exists():
        return str(python)
    uv = str(Path(sys.executable).parent / "uv") if (Path(sys.executable).parent / "uv").exists() else \
        shutil.which("uv")
    if not uv:
        raise LocalError("uv is not installed (pip install uv)")
    shutil.rmtree(venv, ignore_errors=True)
    print(f"building the environment ({', '.join(requirements)}) in {venv} ...", file=log, flush=True)
    for step in ([uv, "venv", "--python", os.path.realpath(sys.executable), "--no-project", str(venv)],
                 [uv, "pip", "install", "--python", str(python), *lines]):
        done = subprocess.run(step, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if done.returncode != 0:
            tail = "\n".join(done.stdout.strip().splitlines()[-15:])
            raise LocalError(f"the environment failed to build:\n{tail}")
    (venv / ".built").touch()
    return str(python)


def server_command(spec: dict, file: str, port: int) -> tuple[list[str], dict[str, str], str]:
    """(argv, environment, secret) of the model server for a deployment spec."""
    base = Path(file).parent if file else Path.cwd()
    model = _local_path(spec.get("model"), base, "model")
    code_config = spec.get("code_configuration") or {}
    is_mlflow = (model / "MLmodel").exists() if model.is_dir() else False
    requirements = _requirements(spec.get("environment"))
    argv_format: list[str]
    if is_mlflow and not code_config:
        lines = (model / "requirements.txt").read_text().splitlines() if (model / "requirements.txt").exists() else []
        requirements = requirements or [x for x in lines if x.strip() and not x.startswith("-")
                                        and not x.lower().startswith(("mlflow==", "mlflow "))] + ["mlflow-skinny",
                                                                                                   "pandas"]
        argv_format = ["--format", "mlflow", "--artifact", str(model)]
    else:
        code = _local_path(code_config.get("code"), base, "code_configuration.code")
        script = code_config.get("scoring_script") or "score.py"
        if not (code / script).is_file():
            raise LocalError(f"code_configuration.scoring_script: no {script} in {code}")
        argv_format = ["--format", "custom", "--artifact", str(model), "--code-dir", str(code),
                       "--scoring-script", script]
    python = build_environment(requirements)
    secret = secrets.token_urlsafe(32)
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER")}
    env.update({"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "STUDIO_INSTANCE_SECRET": secret,
                "AZUREML_MODEL_DIR": str(model if model.is_dir() else model.parent), "STUDIO_MODEL_PATH": str(model)})
    env.update({str(k): str(v) for k, v in (spec.get("environment_variables") or {}).items()})
    argv = [python, "-m", "endpoints_app.runtime.server", *argv_format, "--host", "127.0.0.1", "--port", str(port),
            "--name", f"{spec.get('endpoint_name') or 'local'}/{spec.get('name') or 'local'}"]
    return argv, env, secret


def run(spec: dict, file: str, port: int) -> int:
    """Run the deployment's model server in the foreground until it exits or Ctrl-C; its exit status."""
    argv, env, secret = server_command(spec, file, port)
    state = home() / f"{spec.get('endpoint_name') or 'local'}.json"
    fd = os.open(state, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"port": port, "secret": secret, "deployment": spec.get("name")}, fh)
    print(f"serving {spec.get('name')} locally on http://127.0.0.1:{port}/score "
          f"(studio online-endpoint invoke --local -n {spec.get('endpoint_name') or 'local'}); Ctrl-C stops",
          file=sys.stderr, flush=True)
    proc = subprocess.Popen(argv, env=env, cwd=env["AZUREML_MODEL_DIR"])
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGTERM)
        return proc.wait()
    finally:
        state.unlink(missing_ok=True)


def invoke(endpoint: str, body: bytes, route: str = "score") -> Any:
    """POST `body` to the local model server of `endpoint`; its JSON answer, or LocalError with its message."""
    try:
        state = json.loads((home() / f"{endpoint}.json").read_text())
    except FileNotFoundError:
        raise LocalError(f"no local deployment of {endpoint} is running (studio online-deployment create "
                         "--local -f deployment.yml)") from None
    conn = http.client.HTTPConnection("127.0.0.1", int(state["port"]), timeout=60)
    try:
        conn.request("POST", f"/{route}", body=body, headers={"Authorization": f"Bearer {state['secret']}",
                                                              "Content-Type": "application/json"})
        response = conn.getresponse()
        text = response.read().decode("utf-8", "replace")
    except OSError as exc:
        raise LocalError(f"the local model server of {endpoint} does not answer ({exc})") from None
    finally:
        conn.close()
    try:
        answer = json.loads(text)
    except ValueError:
        answer = text
    if response.status >= 400:
        message = answer.get("error", {}).get("message") if isinstance(answer, dict) else text
        raise LocalError(f"{response.status}: {message}")
    return answer
