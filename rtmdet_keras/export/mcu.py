"""What is inside a ``.tflite``: the operator report and the checks an int8 MCU/NPU graph must pass.

:func:`graph_summary` lists the operators and tensors of a model, :func:`op_report` and
:func:`format_op_table` count them by type (the export writes the table as ``<stem>_ops.txt`` and into
its JSON), and :func:`int8_graph_problems` says what keeps a full-integer model from running on TFLite
Micro or an Ethos-U NPU. The rest of the MCU report: :mod:`rtmdet_keras.export.c_array` (the model as a
C array) and :mod:`rtmdet_keras.export.vela` (Arm's Vela compiler), which the export runs through
:func:`report_c_array` and :func:`report_vela`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rtmdet_keras.export.c_array import write_c_array
from rtmdet_keras.export.vela import VelaError, compile_vela, format_vela_summary
from rtmdet_keras.runtime.layout import ExportError
from rtmdet_keras.runtime.tflite import open_interpreter

# Builtin ops that TFLite Micro runs in int8 and ARM Vela places on the Ethos-U NPU (within their
# per-op constraints). QUANTIZE is allowed as an int8 -> int8 requantisation (the converter inserts
# one where a tensor feeds consumers that need other scales) and right after a uint8 input;
# DEQUANTIZE is not allowed at all in a full-integer graph.
MCU_INT8_OPS = (
    "CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "SUB", "MUL", "CONCATENATION", "MAX_POOL_2D", "AVERAGE_POOL_2D",
    "RESIZE_NEAREST_NEIGHBOR", "PAD", "LOGISTIC", "RESHAPE", "MEAN", "HARD_SWISH", "RELU", "RELU6",
    "QUANTIZE", "DEQUANTIZE",
)
# Ops that betray a dynamic or gather-style graph; named in the problems so people see what to fix.
DYNAMIC_OPS = ("SHAPE", "STRIDED_SLICE", "TILE", "GATHER", "GATHER_ND", "EXPAND_DIMS", "SLICE", "PACK",
               "UNPACK", "FILL", "BROADCAST_TO", "WHILE", "IF")


def _dtype_name(t) -> str:
    return np.dtype(t).name


def graph_summary(path) -> dict:
    """Operators and tensors of a ``.tflite`` (its first subgraph).

    Returns ``{"ops": [{"op", "inputs": [(dtype, is_const)], "outputs": [dtype], "input_ids", "output_ids"}],
    "tensors": {index: {"name", "dtype", "shape", "shape_signature", "scales"}}, "graph_inputs",
    "graph_outputs", "output_names": {index: signature output name}}``. A tensor is *constant* when no
    operator produces it and it is not a graph input (weights, biases, shapes, paddings); ``scales`` are
    its quantisation scales (one per channel, or one; empty for a float tensor).
    """
    it = open_interpreter(path)
    tensors = {}
    for d in it.get_tensor_details():
        tensors[int(d["index"])] = {"name": d["name"], "dtype": _dtype_name(d["dtype"]),
                                    "shape": [int(v) for v in d["shape"]],
                                    "shape_signature": [int(v) for v in d.get("shape_signature", d["shape"])],
                                    "scales": [float(v) for v in d["quantization_parameters"]["scales"]]}
    graph_inputs = [int(d["index"]) for d in it.get_input_details()]
    graph_outputs = [int(d["index"]) for d in it.get_output_details()]
    signatures = it.get_signature_list()
    key = "serving_default" if "serving_default" in signatures else next(iter(signatures), None)
    output_names = ({int(d["index"]): name for name, d in it.get_signature_runner(key).get_output_details().items()}
                    if key else {})
    ops = it._get_ops_details()  # the only public-enough way to list operators from Python
    produced = {int(o) for op in ops for o in op["outputs"] if o >= 0}
    rows = []
    for op in ops:
        ins = [int(i) for i in op["inputs"] if i >= 0]
        outs = [int(o) for o in op["outputs"] if o >= 0]
        rows.append({
            "op": op["op_name"],
            "inputs": [(tensors[i]["dtype"], i not in produced and i not in graph_inputs) for i in ins],
            "outputs": [tensors[o]["dtype"] for o in outs],
            "input_ids": ins, "output_ids": outs,
        })
    return {"ops": rows, "tensors": tensors, "graph_inputs": graph_inputs, "graph_outputs": graph_outputs,
            "output_names": output_names}


def op_report(path_or_summary) -> list:
    """Operators with their count and input/output types: ``[{"op", "count", "inputs", "outputs"}]``
    where ``inputs`` reads like ``"int8, const int8, const int32"``. Ordered by first appearance."""
    summary = path_or_summary if isinstance(path_or_summary, dict) else graph_summary(path_or_summary)
    counts = {}
    for op in summary["ops"]:
        ins = ", ".join(("const " if const else "") + t for t, const in op["inputs"])
        key = (op["op"], ins, ", ".join(op["outputs"]))
        counts[key] = counts.get(key, 0) + 1
    return [{"op": op, "count": n, "inputs": ins, "outputs": outs} for (op, ins, outs), n in counts.items()]


def format_op_table(rows) -> str:
    """The op report as a plain-text table."""
    w_op = max([len("op")] + [len(r["op"]) for r in rows])
    w_in = max([len("inputs")] + [len(r["inputs"]) for r in rows])
    head = f"{'op':<{w_op}}  {'count':>5}  {'inputs':<{w_in}}  outputs"
    rule = "-" * max(len(head), max((w_op + w_in + 9 + len(r["outputs"]) for r in rows), default=0))
    lines = [rule, head, rule]
    lines += [f"{r['op']:<{w_op}}  {r['count']:>5}  {r['inputs']:<{w_in}}  {r['outputs']}" for r in rows]
    lines.append(f"{'total':<{w_op}}  {sum(r['count'] for r in rows):>5}")
    lines.append(rule)
    return "\n".join(lines) + "\n"


def int8_graph_problems(path_or_summary, input_type: str = "int8") -> list:
    """What keeps a full-integer model from running on TFLite Micro / an Ethos-U NPU: an empty list when
    every op is in :data:`MCU_INT8_OPS`, every tensor between operators is int8, constants are int8 or
    int32 (biases, shapes), QUANTIZE/DEQUANTIZE sit only at the edges, and every tensor is static, at
    most 4-D, with batch 1. ``input_type`` is the expected input dtype (``"int8"`` or ``"uint8"``)."""
    s = path_or_summary if isinstance(path_or_summary, dict) else graph_summary(path_or_summary)
    problems = []
    for name in sorted({op["op"] for op in s["ops"]} - set(MCU_INT8_OPS)):
        n = sum(op["op"] == name for op in s["ops"])
        why = " (a dynamic-shape or gather op)" if name in DYNAMIC_OPS else ""
        problems.append(f"op {name} x{n} is not one TFLite Micro and Vela run in int8{why}")
    for i in s["graph_inputs"]:
        if s["tensors"][i]["dtype"] != input_type:
            problems.append(f"input {s['tensors'][i]['name']} is {s['tensors'][i]['dtype']}, expected {input_type}")
    for i in s["graph_outputs"]:
        if s["tensors"][i]["dtype"] != "int8":
            problems.append(f"output {s['tensors'][i]['name']} is {s['tensors'][i]['dtype']}, expected int8")
    for op in s["ops"]:
        for (dtype, const), idx in zip(op["inputs"], op["input_ids"]):
            t = s["tensors"][idx]
            if const and dtype not in ("int8", "int32"):
                problems.append(f"{op['op']}: constant {t['name']} is {dtype}")
            elif not const and dtype != "int8" and not (op["op"] == "QUANTIZE" and idx in s["graph_inputs"]):
                problems.append(f"{op['op']}: input {t['name']} is {dtype}, not int8")
        for dtype, idx in zip(op["outputs"], op["output_ids"]):
            if dtype != "int8" and not (op["op"] == "DEQUANTIZE" and idx in s["graph_outputs"]):
                problems.append(f"{op['op']}: output {s['tensors'][idx]['name']} is {dtype}, not int8")
        if op["op"] == "QUANTIZE" and not all(i in s["graph_inputs"] or dt == "int8"
                                               for i, (dt, _) in zip(op["input_ids"], op["inputs"])):
            problems.append("QUANTIZE from a non-int8 tensor inside the graph (allowed only right after the input)")
        if op["op"] == "DEQUANTIZE":
            problems.append("DEQUANTIZE in a full-integer graph (float output or float fallback)")
    for idx, t in s["tensors"].items():
        if len(t["shape"]) > 4:
            problems.append(f"tensor {t['name']} is {len(t['shape'])}-D {t['shape']}; NPUs take at most 4-D")
        if any(v < 0 for v in t["shape_signature"]):
            problems.append(f"tensor {t['name']} has a dynamic shape {t['shape_signature']}")
    for i in s["graph_inputs"]:
        if s["tensors"][i]["shape"][:1] != [1]:
            problems.append(f"input {s['tensors'][i]['name']} has batch {s['tensors'][i]['shape'][:1]}, expected 1")
    # One line per distinct problem, in order.
    return list(dict.fromkeys(problems))


_BIAS_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")  # inputs: data, weights, bias


def bias_scale_problems(path_or_summary, rtol: float = 1e-3) -> list:
    """Integer convolutions whose bias is not quantised with input scale x weight scale, the scale the
    kernel adds it with: their outputs are wrong. TFLite's converter merges equal bias constants into one
    tensor; its int16x8 quantiser then quantises that tensor once, for the first convolution that uses
    it (docs/benchmarks.md, "Export targets"). Trained networks rarely share a bias; untrained ones do."""
    s = path_or_summary if isinstance(path_or_summary, dict) else graph_summary(path_or_summary)
    problems = []
    for op in s["ops"]:
        if op["op"] not in _BIAS_OPS or len(op["input_ids"]) < 3 or not op["inputs"][2][0].startswith("int"):
            continue
        x, w, b = (s["tensors"][i] for i in op["input_ids"][:3])
        sx, sw, sb = (np.asarray(t["scales"], np.float64) for t in (x, w, b))
        if not (sx.size and sw.size and sb.size):
            continue
        want = sx[0] * sw
        ratio = float(np.max(np.abs(sb / want - 1.0))) if sb.shape == want.shape else np.inf
        if ratio > rtol:
            out = op["output_ids"][0]
            out = s["output_names"].get(out, s["tensors"][out]["name"])
            problems.append(f"{op['op']} -> {out}: bias {b['name']} is quantised for another op's scale "
                            f"({sb[0]:.3g} where input x weight scale is {want[0]:.3g}); this op's outputs are wrong")
    return problems


def report_c_array(tflite_path, meta, print_fn, note=None) -> None:
    """Write ``tflite_path`` as a C array (:func:`~rtmdet_keras.export.c_array.write_c_array`) and say where."""
    files = write_c_array(tflite_path, meta=meta, note=note)
    print_fn(f"C array for TFLite Micro: {files['cc']}, {files['h']}")


def report_vela(int8_path, meta, options, c_array, print_fn) -> Path:
    """Compile the int8 model with Vela (``options``: :func:`~rtmdet_keras.export.vela.compile_vela`'s), print
    its summary, write the compiled model as a C array too when ``c_array``; returns the compiled model."""
    try:
        result = compile_vela(int8_path, **options)
    except VelaError as e:
        raise ExportError(str(e)) from None
    print_fn(f"\n{result['files']['tflite']}: {format_vela_summary(result)}\n"
             f"Vela's report: {result['files']['report']}")
    if c_array:
        report_c_array(result["files"]["tflite"], meta, print_fn,
                       note=f"Compiled by Vela {result['vela_version']} for {result['accelerator']} "
                            f"({result['system_config']}, {result['memory_mode']}): the NPU part is one "
                            f"ethos-u custom op; run it with TFLite Micro's Ethos-U kernel.")
    return result["files"]["tflite"]
