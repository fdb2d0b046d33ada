"""onnx_eval.py: an independent reading of an ONNX file that `cohort export`
wrote, for test_cli_export. The onnx package (Debian's python3-onnx) parses
and checks it (onnx.checker with shape inference); the graph is then run
node by node in numpy, implementing exactly the operators the exporter may
use from their ONNX definitions (Gemm, Relu, Sigmoid, Softmax; and for the
encoder IsNaN, Add, Log, Sub, Div, Where, Cast, Equal, Concat and
ai.onnx.ml LabelEncoder). Prints one JSON object: the metadata, the graph's
input/output shapes and ops, the probabilities, and with --label the
accuracy at 0.5 and the exact AUC (ties averaged).

usage: python3 onnx_eval.py MODEL.onnx FEATURES.csv
         (a graph on encoded features: the CSV holds them, no header)
       python3 onnx_eval.py MODEL.onnx DATA.csv --label COL --positive VALUE
         (a graph on raw columns: the CSV has a header; each graph input
          takes its column, numeric cells that do not parse become NaN)
"""
import csv
import json
import sys

import numpy as np
import onnx
from onnx import numpy_helper


def dims(value_info):
    return [d.dim_param if d.dim_param else d.dim_value
            for d in value_info.type.tensor_type.shape.dim]


def run(model, feeds):
    vals = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    vals.update(feeds)
    for n in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        ins = [vals[i] for i in n.input]
        if n.op_type == "Gemm":
            a, b, c = ins
            if attrs.get("transA", 0):
                a = a.T
            if attrs.get("transB", 0):
                b = b.T
            y = attrs.get("alpha", 1.0) * (a @ b) + attrs.get("beta", 1.0) * c
        elif n.op_type == "Relu":
            y = np.maximum(ins[0], 0)
        elif n.op_type == "Sigmoid":
            y = 1.0 / (1.0 + np.exp(-ins[0]))
        elif n.op_type == "IsNaN":
            y = np.isnan(ins[0])
        elif n.op_type in ("Add", "Sub", "Div"):
            y = {"Add": np.add, "Sub": np.subtract, "Div": np.divide}[n.op_type](ins[0], ins[1])
        elif n.op_type == "Log":
            with np.errstate(invalid="ignore", divide="ignore"):
                y = np.log(ins[0])
        elif n.op_type == "Where":
            y = np.where(ins[0], ins[1], ins[2])
        elif n.op_type == "Cast":
            assert attrs["to"] == onnx.TensorProto.FLOAT
            y = ins[0].astype(np.float32)
        elif n.op_type == "Equal":
            y = np.equal(ins[0], ins[1])
        elif n.op_type == "Concat":
            y = np.concatenate(ins, axis=attrs["axis"])
        elif n.op_type == "LabelEncoder" and n.domain == "ai.onnx.ml":
            keys = [k.decode() for k in attrs["keys_strings"]]
            table = dict(zip(keys, attrs["values_int64s"]))
            default = attrs.get("default_int64", -1)
            y = np.vectorize(lambda v: table.get(v, default), otypes=[np.int64])(ins[0])
        elif n.op_type == "Softmax":
            z = ins[0] - ins[0].max(axis=attrs.get("axis", -1), keepdims=True)
            e = np.exp(z)
            y = e / e.sum(axis=attrs.get("axis", -1), keepdims=True)
        else:
            raise SystemExit("unexpected operator " + n.op_type)
        vals[n.output[0]] = y.astype(np.float32) if y.dtype == np.float64 else y
    return vals[model.graph.output[0].name]


def number(cell):
    try:
        return float(cell)
    except ValueError:
        return float("nan")


def auc(scores, y):
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    ranks = np.empty(len(s))
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1
        i = j + 1
    pos = y == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return (ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def main():
    model = onnx.load(sys.argv[1])
    onnx.checker.check_model(model, full_check=True)
    extra = {}
    if "--label" in sys.argv:
        label = sys.argv[sys.argv.index("--label") + 1]
        positive = sys.argv[sys.argv.index("--positive") + 1]
        with open(sys.argv[2], newline="") as f:
            rows = list(csv.DictReader(f))
        feeds = {}
        for i in model.graph.input:
            cells = [r[i.name] for r in rows]
            if i.type.tensor_type.elem_type == onnx.TensorProto.STRING:
                feeds[i.name] = np.array(cells, dtype=object).reshape(-1, 1)
            else:
                feeds[i.name] = np.array([number(c) for c in cells],
                                         dtype=np.float32).reshape(-1, 1)
        p = run(model, feeds)
        y = np.array([1 if r[label] == positive else 0 for r in rows])
        score = p[:, 0].astype(np.float64)
        extra = {"accuracy": float(((score > 0.5) == (y == 1)).mean()),
                 "auc": float(auc(score, y)), "n": len(rows)}
    else:
        x = np.loadtxt(sys.argv[2], delimiter=",", ndmin=2, dtype=np.float64).astype(np.float32)
        p = run(model, {model.graph.input[0].name: x})
    out = {
        "ir_version": model.ir_version,
        "opset": [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")],
        "producer": model.producer_name,
        "model_version": model.model_version,
        "metadata": {kv.key: kv.value for kv in model.metadata_props},
        "inputs": [[i.name, dims(i)] for i in model.graph.input],
        "outputs": [[o.name, dims(o)] for o in model.graph.output],
        "ops": [n.op_type for n in model.graph.node],
        "probability": p.tolist(),
    }
    out.update(extra)
    print(json.dumps(out))


main()
