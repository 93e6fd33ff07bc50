"""The one backend selection (`open_backend`): which runner each artifact gets, the provider registry, and the
shape rules a backend with engine profiles applies (pure logic: no TensorRT needed)."""

from __future__ import annotations

import pytest
from conftest import EMBEDDED

from bertrt.profiles import parse_profile
from bertrt.errors import BertrtError
from bertrt.model_config import BertConfig
from bertrt.run import backends
from bertrt.run.backends import QABackend, open_backend

CFG = BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=256,
                 max_position_embeddings=512)


def test_runner_per_artifact(random_fused, tmp_path):
    unfused, plugins, _ = random_fused((2, 64, 2, "erf"), "plugins")
    assert open_backend(unfused).runner.name.startswith("onnxruntime-cpu")
    assert open_backend(plugins).runner.name.startswith("plugin-reference")
    assert open_backend(EMBEDDED).runner.name.startswith("tf:")
    with pytest.raises(BertrtError, match="unsupported model file"):
        open_backend(tmp_path / "model.pt")
    with pytest.raises(BertrtError, match="engine file not found"):
        open_backend(tmp_path / "model.engine")


def test_provider_registry_is_the_extension_point(random_fused, monkeypatch):
    """A runner registered for a provider is what every command gets for ONNX models with --provider."""
    unfused, _, _ = random_fused((2, 64, 2, "erf"), "ort")
    seen = []

    def factory(artifact, options):
        seen.append((artifact.path, artifact.config.hidden_size, artifact.session_config, options.provider))
        return QABackend("custom-runner", artifact.config, "custom")

    monkeypatch.setitem(backends.ONNX_RUNNERS, "cuda", factory)
    assert open_backend(unfused, provider="cuda").runner == "custom-runner"
    assert seen == [(unfused, 64, {}, "cuda")]
    with pytest.raises(BertrtError, match="unknown provider 'tpu'"):
        open_backend(unfused, provider="tpu")


def test_profile_shape_rules():
    fixed = QABackend(None, CFG, "", (parse_profile("batch=1:8:8,seq=384"), parse_profile("batch=1:4,seq=128")))
    assert fixed.seq_len is None  # two different fixed lengths: no single S
    assert fixed.check_shape(8, 384) == 0 and fixed.check_shape(2, 128) == 1
    with pytest.raises(BertrtError, match=r"outside the engine's profiles \(batch=1:8:8,seq=384:384:384; "):
        fixed.check_shape(5, 128)
    single = QABackend(None, CFG, "", (parse_profile("batch=1:8,seq=384"),))
    assert single.seq_len == 384 and single.padded_length(17) == 384
    ranged = QABackend(None, CFG, "", (parse_profile("batch=1:8,seq=64:128:256"),))
    assert ranged.seq_len is None and ranged.padded_length(17) == 64 and ranged.padded_length(200) == 200
    onnx_like = QABackend(None, CFG, "")
    assert onnx_like.check_shape(1000, 100) is None and onnx_like.padded_length(17) == 17
    with pytest.raises(BertrtError, match="exceeds the model's 512 positions"):
        onnx_like.check_shape(1, 513)
