"""Fold the DequantizeLinear of quantized weights into FP32 initializers, for running Q/DQ models on onnxruntime's
CPU provider with its Q/DQ fusion off (FP8: the numbers are the same, the dequantization is done once)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def fold_weight_dequantize(model):
    """Replace each DequantizeLinear of an initializer by its FP32 result (exactly w_q * scale): the same numbers,
    but onnxruntime no longer dequantizes 10M weights on every run. onnxruntime never constant-folds
    DequantizeLinear, and without its Q/DQ fusion (needed for FP8) that dominated the run time."""
    inits = {i.name: i for i in model.graph.initializer}
    keep, folded = [], []
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and n.input[1] in inits:
            q = numpy_helper.to_array(inits[n.input[0]]).astype(np.float32)
            scale = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
            zp = (numpy_helper.to_array(inits[n.input[2]]).astype(np.float32)
                  if len(n.input) > 2 and n.input[2] in inits else np.float32(0))
            if scale.ndim == 1 and scale.size > 1:
                axis = next((a.i for a in n.attribute if a.name == "axis"), 1) % q.ndim
                shape = [1] * q.ndim
                shape[axis] = -1
                scale, zp = scale.reshape(shape), np.reshape(zp, shape) if np.ndim(zp) else zp
            folded.append(numpy_helper.from_array(((q - zp) * scale).astype(np.float32), n.output[0]))
        else:
            keep.append(n)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    model.graph.initializer.extend(folded)
    used = {x for n in model.graph.node for x in n.input} | {o.name for o in model.graph.output}
    kept_inits = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept_inits)
    onnx.checker.check_model(model)
    return model
