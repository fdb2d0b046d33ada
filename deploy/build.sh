#!/usr/bin/env bash
# build.sh [BUILD_DIR] [CMAKE_ARGS...]: configure and build Cohort.
# Default BUILD_DIR is build/. The CUDA backend is built when nvcc is found.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
cmake --build "$dir" -j"$(nproc)"
