"""bertrt: BERT question answering from checkpoint to TensorRT, verified against onnxruntime at every stage."""

__version__ = "0.1.0"
