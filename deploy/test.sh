#!/usr/bin/env bash
# test.sh: the whole test suite. Installs what it needs, builds with warnings
# as errors (the CUDA backend too when nvcc is present, so it cannot rot),
# runs every ctest test, then rebuilds with AddressSanitizer + UBSan and runs
# the unit and integration tests again.
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/setup.sh
jobs=$(nproc)

echo "== build (warnings as errors)"
./deploy/build.sh build-test -DCOHORT_WERROR=ON
echo "== tests"
(cd build-test && ctest --output-on-failure -j"$jobs")

echo "== sanitizer build (address, undefined)"
./deploy/build.sh build-asan -DCOHORT_WERROR=ON -DCOHORT_CUDA=OFF \
  -DCOHORT_SANITIZE=address,undefined
echo "== tests under ASan + UBSan"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --output-on-failure -j"$jobs" -L 'unit|integration')
