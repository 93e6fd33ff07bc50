"""Checkpoints: reading a TF1 checkpoint or Hugging Face safetensors into Google's BERT variable names, and the TF
network built from them (what `bertrt export` converts, and the reference the `tf-checkpoint` runtime runs).
TensorFlow and safetensors are optional dependencies (the `export` extra), imported only when used."""
