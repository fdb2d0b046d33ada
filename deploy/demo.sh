#!/usr/bin/env bash
# demo.sh: the main job. Installs what it needs, builds, and trains the
# baseline logistic regression on the bundled credit data (deploy/demo/data,
# see NOTICE.md there). Results: stdout (JSON) and demo-out/.
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/setup.sh
./deploy/build.sh build
out=demo-out
mkdir -p "$out"
echo "== cohort train: logistic regression on credit_data (4454 loan applicants)"
./build/bin/cohort train --data deploy/demo/data/credit_data.csv \
  --schema deploy/demo/credit.schema.ini --model logreg --out "$out/credit-logreg.model" \
  --json | tee "$out/train.json"
echo "== results: $out/train.json, model: $out/credit-logreg.model"
