#!/usr/bin/env bash
# demo.sh: the main job. Installs what it needs, builds, and runs a federation
# on this machine: a throwaway PKI, one aggregator and three site agents as
# real processes talking gRPC over mutual TLS on 127.0.0.1, training a
# logistic regression with DP-SGD at every site on the bundled credit data split by housing
# (deploy/demo/federation.ini; data licences in deploy/demo/data/NOTICE.md),
# with every update, statistic and evaluation count summed through secure
# aggregation (SecAgg+) and a fairness audit (Age, Marital) every round.
# Then it checks the aggregator's signed audit log, writes the audit report
# (HTML + JSON), exports the final model as ONNX, and trains the same model
# centrally for comparison.
set -euo pipefail
cd "$(dirname "$0")/.."
./deploy/setup.sh
./deploy/build.sh build
out=demo-out
run="$out/federation-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"
echo "== cohort simulate: 3 sites, 10 rounds of FedAvg with record-level DP and secure aggregation, over gRPC + mTLS"
./build/bin/cohort simulate --config deploy/demo/federation.ini --workdir "$run" --json \
  | tee "$out/simulate.json"
echo
echo "== cohort verify: the audit log's hash chain and the aggregator's signatures"
./build/bin/cohort verify --db "$run/aggregator.db" --ca "$run/pki/ca.crt"
echo
echo "== cohort report: the audit report"
./build/bin/cohort report --db "$run/aggregator.db" --ca "$run/pki/ca.crt" \
  --out "$out/report.html" --json "$out/report.json"
echo
echo "== cohort export: the final global model as ONNX with the federation's encoder (raw columns in),"
echo "   only once the audit log verifies"
./build/bin/cohort export --db "$run/aggregator.db" --ca "$run/pki/ca.crt" --format onnx \
  --schema "$run/sites/site.schema.ini" --data "$run/sites/site-1.csv" --out "$out/model.onnx"
echo
echo "== cohort train: the same logistic regression, centralized, on the same test split"
./build/bin/cohort train --data deploy/demo/data/credit_data.csv \
  --schema deploy/demo/credit.schema.ini --model logreg --val-fraction 0 --epochs 40 \
  --out "$out/credit-logreg.model" --json > "$out/train.json"
cat "$out/train.json"
echo
echo "== results"
echo "  federation work directory:  $run (aggregator.db, logs, site data, PKI)"
echo "  federation summary JSON:    $out/simulate.json"
echo "  centralized baseline JSON:  $out/train.json"
echo "  audit report:               $out/report.html (and $out/report.json)"
echo "  final model (ONNX):         $out/model.onnx"
