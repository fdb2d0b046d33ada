#!/usr/bin/env bash
# setup.sh: installs every Debian 12 package Cohort needs to build, test and
# run (DESIGN.md §3). Idempotent: packages already present are not touched,
# and nothing is downloaded when all are installed.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git
  libopenblas-dev        # CPU math (sgemm)
  libsodium-dev          # CSPRNG, X25519, XChaCha20-Poly1305, ChaCha20, BLAKE2b, memzero
  libssl-dev             # X.509 PKI, TLS, ECDSA
  libgrpc-dev            # transport: gRPC C core, unary calls over mutual TLS
  libprotobuf-c-dev protobuf-c-compiler  # wire protocol: protoc-c at build time, libprotobuf-c
  libsqlite3-dev         # aggregator and client state, audit log
  libcjson-dev           # --json output, JSON API, reports
  libcmocka-dev          # unit tests
  zlib1g-dev             # gzip-compressed IDX files
  dataset-fashion-mnist  # the image workload (IDX files)
  chromium               # headless rendering test of the HTML audit report (tests skip it when absent)
  python3-onnx python3-numpy  # test_cli_export reads `cohort export`'s ONNX files independently
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
