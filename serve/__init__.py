"""Serving with NVIDIA Triton Inference Server: model repository, server process, load client (`bertrt triton-repo`,
`bertrt serve`, `bertrt serve-bench`)."""
