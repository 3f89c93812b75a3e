"""Environments: first build time, reuse for a second deployment, and create-to-Succeeded of a model on
a built environment against a catalog model, in the same run. Goal: within 1 s of the catalog model.

Run: .venv/bin/python bench/environments.py [--repeat 3] [--packages six==1.17.0] [--cold]

Makes a throwaway studio (embedded default) with a real Celery worker, then:
1. first build: creates an environment (the packages given, plus the model server's own pinned ones)
   through the REST API and times create -> build Succeeded. uv's cache is the persistent one in
   ~/.cache/studio/uv-bench (downloads happen once per machine); --cold uses an empty cache, so the
   figure includes the downloads;
2. reuse: a deployment naming the same packages inline, created once the build is there: create ->
   Succeeded, and the number of builds (1: nothing was built again);
3. alternating, `--repeat` times: a score.py model on the built environment, the same score.py on the
   studio's own Python (six is there too: the difference is what the environment costs), and the
   catalog's iris-classifier, create -> Succeeded each (then deleted).
Prints the figures and writes bench/results/environments-<time>.json."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
NODE = "bench-node"
WS = "/api/v1/workspaces/bench"

from bench.common import owner_api, setup_studio, start_worker, stop_studio, wait  # noqa: E402

SCORE_PY = '''
import json
import six


def init():
    pass


def run(raw_data):
    return {"six": six.__version__, "data": json.loads(raw_data).get("data")}
'''


def _deploy(api, model: str, name: str, environment=None) -> float:
    from endpoints_app.models import Deployment

    body = {"name": name, "model": model, "instance_type": "Standard_DS1_v2", "instance_count": 1}
    if environment is not None:
        body["environment"] = environment
    began = time.monotonic()
    response = api.post(f"{WS}/online-endpoints/bench/deployments", body, format="json")
    assert response.status_code == 202, response.content
    state = wait(lambda: (s := Deployment.objects.filter(name=name).values_list("provisioning_state", flat=True)
                          .first()) in ("Succeeded", "Failed") and s, timeout=600, what=f"{name} Succeeded")
    elapsed = time.monotonic() - began
    if state != "Succeeded":
        raise RuntimeError(Deployment.objects.get(name=name).error)
    return elapsed


def _delete(api, name: str) -> None:
    from endpoints_app.models import Deployment

    assert api.delete(f"{WS}/online-endpoints/bench/deployments/{name}").status_code in (202, 204)
    wait(lambda: not Deployment.objects.filter(name=name).exists(), timeout=120, what="deleted")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--packages", default="six==1.17.0")
    parser.add_argument("--cold", action="store_true", help="an empty uv cache: the first build downloads")
    args = parser.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="studio-bench-uv-")) if args.cold else \
        Path.home() / ".cache" / "studio" / "uv-bench"
    packages = [p for p in args.packages.split(",") if p]

    data_dir = setup_studio("environments", STUDIO_NODE_NAME=NODE, STUDIO_ENV_UV_CACHE=str(cache))
    from endpoints_app.models import CatalogModel, EnvironmentBuild, Workspace

    api = owner_api()
    assert api.post(f"{WS}/online-endpoints", {"name": "bench"}, format="json").status_code == 201
    code = data_dir / "bench-model"
    code.mkdir()
    (code / "score.py").write_text(SCORE_PY)
    CatalogModel.objects.create(registry="bench", workspace=Workspace.objects.get(name="bench"), name="six-model",
                                version=1, task="custom", format="custom", license="MIT", artifact_path=str(code),
                                scoring_script="score.py", deployment_kinds=["online", "batch"])
    iris = CatalogModel.objects.get(registry="studio", name="iris-classifier").asset_id
    worker = start_worker(data_dir, NODE)
    try:
        began = time.monotonic()
        created = api.post(f"{WS}/environments", {"name": "bench-env", "pip_requirements": packages},
                           format="json")
        assert created.status_code == 201, created.content
        state = wait(lambda: (s := EnvironmentBuild.objects.values_list("state", flat=True).first())
                     in ("Succeeded", "Failed") and s, timeout=900, what="build")
        first_build = time.monotonic() - began
        if state != "Succeeded":
            raise RuntimeError(EnvironmentBuild.objects.get().error)
        reuse = _deploy(api, "six-model:1", "reuse", {"pip_requirements": packages})
        builds = EnvironmentBuild.objects.count()
        _delete(api, "reuse")

        times: dict[str, list[float]] = {"env": [], "plain": [], "catalog": []}
        for run in range(args.repeat):
            # Alternate the order so page cache and CPU contention favour no side.
            order = [("env", "six-model:1", "azureml:bench-env:1"), ("plain", "six-model:1", None),
                     ("catalog", iris, None)]
            for kind, model, environment in (order if run % 2 == 0 else order[::-1]):
                name = f"{kind}{run}"
                times[kind].append(_deploy(api, model, name, environment))
                _delete(api, name)
        on_env, plain, catalog = times["env"], times["plain"], times["catalog"]
    finally:
        stop_studio(data_dir, [worker])

    env_median, catalog_median = statistics.median(on_env), statistics.median(catalog)
    plain_median = statistics.median(plain)
    result = {
        "packages": packages, "uv_cache": "cold" if args.cold else "warm", "first_build_s": round(first_build, 2),
        "second_deployment_on_built_environment_s": round(reuse, 2), "builds_after_second_deployment": builds,
        "model_on_environment_s": [round(x, 2) for x in on_env], "catalog_model_s": [round(x, 2) for x in catalog],
        "same_model_on_the_studio_python_s": [round(x, 2) for x in plain],
        "median_difference_s": round(env_median - catalog_median, 2),
        "ratio": round(env_median / catalog_median, 2),
    }
    print(f"first build ({', '.join(packages)}, {result['uv_cache']} uv cache): {first_build:.1f} s")
    print(f"second deployment on the built environment: {reuse:.2f} s create->Succeeded, "
          f"{builds} build in all")
    print(f"create->Succeeded, median of {args.repeat}: model on a built environment {env_median:.2f} s, "
          f"catalog model {catalog_median:.2f} s: {env_median - catalog_median:+.2f} s "
          f"({result['ratio']}x; goal: within 1 s)")
    print(f"the same score.py on the studio's own Python: {plain_median:.2f} s (the environment adds "
          f"{env_median - plain_median:+.2f} s)")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"environments-{datetime.now(UTC):%Y%m%d-%H%M%S}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
