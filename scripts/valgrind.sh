#!/usr/bin/env bash
# Runs the CPU kernels' property tests (tests/ops.rs, f32 and f64: strided copies, GEMM, reductions, the
# fused attention / softmax / rms-norm / RoPE kernels with their backward) under valgrind's memcheck, so that
# an out-of-bounds read or write or a use of uninitialised memory in the unsafe kernels fails the run.
# Few cases per test: valgrind runs code about 30x slower. CI runs this script after the tests.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=$(cargo test --test ops --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
if [ -z "$bin" ]; then
    echo "valgrind.sh: could not build the ops test binary" >&2
    exit 1
fi
# The GPU is left out: the driver is not ours to check (loading lavapipe under memcheck reports the dynamic
# loader's reads), and it is very slow there. The wgpu cases are skipped by name, and the Vulkan loader is
# shown no driver, so a GPU test whose name lacks `wgpu` finds no adapter and skips too (without
# LOWRANK_REQUIRE_WGPU, that is not a failure).
env -u LOWRANK_REQUIRE_WGPU VK_DRIVER_FILES=/nonexistent.json VK_ICD_FILENAMES=/nonexistent.json \
    PROPTEST_CASES="${PROPTEST_CASES:-12}" valgrind --quiet --error-exitcode=99 --track-origins=yes \
    "$bin" --skip wgpu --test-threads=2
