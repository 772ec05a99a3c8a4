#!/usr/bin/env bash
# Builds the Python adapter plugins in this directory into WebAssembly
# components with componentize-py.
#
#   plugins-py/build.sh [OUT_DIR]      (default: plugins-py/target)
#
# componentize-py is installed from PyPI into a venv under
# $ARBITER_PY_VENV (default $HOME/.cache/arbiter-py), reused when present.
# Exit status 3 means the venv could not be created or PyPI could not be
# reached (tests treat that, and only that, as "skip").
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
out="${1:-$here/target}"
venv="${ARBITER_PY_VENV:-$HOME/.cache/arbiter-py}"
tool="$venv/bin/componentize-py"

if ! "$tool" --version 2>/dev/null | grep -q "$COMPONENTIZE_PY_VERSION"; then
    python="${PYTHON:-python3}"
    if ! "$python" -m venv "$venv"; then
        echo "build.sh: cannot create a venv at $venv with $python" >&2
        exit 3
    fi
    if ! "$venv/bin/pip" install --quiet --disable-pip-version-check --timeout 60 \
        "componentize-py==$COMPONENTIZE_PY_VERSION"; then
        echo "build.sh: pip could not install componentize-py==$COMPONENTIZE_PY_VERSION (is PyPI reachable?)" >&2
        exit 3
    fi
fi

mkdir -p "$out"
for plugin in "$here"/*/app.py; do
    dir="$(dirname "$plugin")"
    name="$(basename "$dir")"
    # The bindings (package `wit_world`) are generated into the build
    # directory from the WIT, so they always match the host's contract.
    build="$out/$name.build"
    rm -rf "$build"
    mkdir -p "$build"
    "$tool" -d "$repo/wit/plugin/v0.1.0" -w adapter bindings "$build" >/dev/null
    "$tool" -d "$repo/wit/plugin/v0.1.0" -w adapter componentize \
        -p "$build" -p "$dir" app -o "$out/$name.wasm" >/dev/null
    echo "$out/$name.wasm $(stat -c %s "$out/$name.wasm") bytes"
done
