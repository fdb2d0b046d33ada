"""onnx_eval.py: an independent reading of an ONNX file that `cohort export`
wrote, for test_cli_export. The onnx package (Debian's python3-onnx) parses
and checks it (onnx.checker with shape inference); the graph is then run
node by node in numpy, implementing exactly the operators the exporter may
use (Gemm, Relu, Sigmoid, Softmax) from their ONNX definitions. Prints one
JSON object: the metadata, the graph's input/output shapes and ops, and
the probabilities for the rows of the CSV file of features.

usage: python3 onnx_eval.py MODEL.onnx FEATURES.csv
"""
import json
import sys

import numpy as np
import onnx
from onnx import numpy_helper


def dims(value_info):
    return [d.dim_param if d.dim_param else d.dim_value
            for d in value_info.type.tensor_type.shape.dim]


def run(model, x):
    vals = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    vals[model.graph.input[0].name] = x
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
        elif n.op_type == "Softmax":
            z = ins[0] - ins[0].max(axis=attrs.get("axis", -1), keepdims=True)
            e = np.exp(z)
            y = e / e.sum(axis=attrs.get("axis", -1), keepdims=True)
        else:
            raise SystemExit("unexpected operator " + n.op_type)
        vals[n.output[0]] = y.astype(np.float32)
    return vals[model.graph.output[0].name]


def main():
    model = onnx.load(sys.argv[1])
    onnx.checker.check_model(model, full_check=True)
    x = np.loadtxt(sys.argv[2], delimiter=",", ndmin=2, dtype=np.float64).astype(np.float32)
    p = run(model, x)
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
    print(json.dumps(out))


main()
