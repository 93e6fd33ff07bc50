"""The `native` target: plain ONNX in the forms TensorRT 10/11 fuse by themselves (see surgery/emit_native.py);
onnxruntime runs it on any provider."""

from __future__ import annotations

from bertrt.surgery import emit_native

from bertrt.targets.target import Option, Target

TARGET = Target(
    name="native",
    description="plain ONNX that TensorRT fuses itself",
    runtimes=None,  # plain ONNX: every runtime
    precisions=("fp16", "int8", "fp8"),
    emit=emit_native.emit,
    options=(Option("attention", emit_native.ATTENTION_FORMS, "matmul",
                    "matmul (opset 17 MatMul-Softmax-MatMul, TensorRT 10/11) or onnx-attention (opset 23 Attention "
                    "-> IAttention, TensorRT >= 10.14)"),),
)
