#!/usr/bin/env bash
# Wheels for scripts/gpu_check.py on a GPU machine that has PyTorch (and numpy, which
# its torch install brings) but no package index: everything else the check imports,
# at exactly the versions installed in this checkout's .venv, into .gpu_wheels/ (gitignored).
#
#   bash scripts/gpu_wheels.sh            # then, on the GPU machine (docs/gpu.md):
#   pip install --no-index --find-links .gpu_wheels optuna hydra-core plotly
#
# The GPU machine's Python version is unknown: packages with compiled code are fetched for
# CPython 3.11 to 3.14 on manylinux x86_64 (SQLAlchemy 2.1.9, the pinned one, needs 3.11 or
# later); the rest are pure-Python wheels that fit any of them.
# optuna-dashboard, psycopg, grpcio, matplotlib and scipy are left out: the check never
# imports them (a study's dashboard notes then end as one warning line per trial).
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
DEST=${DEST:-.gpu_wheels}
PY_VERSIONS=${PY_VERSIONS:-"3.11 3.12 3.13 3.14"}

# What `hpo run` and `hpo show` import besides torch and numpy (optuna, hydra-core, plotly
# and their requirements); greenlet is only SQLAlchemy's asyncio extra.
PURE="optuna alembic Mako colorlog tqdm packaging typing_extensions hydra-core omegaconf plotly narwhals"
COMPILED="SQLAlchemy PyYAML MarkupSafe"
SDIST_ONLY="antlr4-python3-runtime"  # hydra-core's parser runtime: published as a source archive only

pinned() {  # NAME==VERSION as installed in $PYTHON's environment
    "$PYTHON" -c 'import importlib.metadata as m, sys; print(f"{sys.argv[1]}=={m.version(sys.argv[1])}")' "$1"
}

mkdir -p "$DEST"
pip=("$PYTHON" -m pip --disable-pip-version-check)
for name in $PURE; do
    "${pip[@]}" download --no-deps --only-binary=:all: --dest "$DEST" "$(pinned "$name")"
done
for name in $COMPILED; do
    for version in $PY_VERSIONS; do
        "${pip[@]}" download --no-deps --only-binary=:all: --dest "$DEST" \
            --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
            --implementation cp --python-version "$version" "$(pinned "$name")"
    done
done
for name in $SDIST_ONLY; do
    "${pip[@]}" wheel --no-deps --wheel-dir "$DEST" "$(pinned "$name")"
done
du -sh "$DEST"
