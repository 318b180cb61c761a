#!/usr/bin/env bash
# Set-up, then the whole test suite through ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
BUILD_DIR=${ATTNRAG_BUILD_DIR:-build}
ctest --test-dir "$BUILD_DIR" --output-on-failure --timeout 900 -j"${ATTNRAG_TEST_JOBS:-1}" "$@"
