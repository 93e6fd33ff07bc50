"""Shared fixtures: the real embedded model exported once per test session, real SQuAD features."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
EMBEDDED = ROOT / "models" / "minilm-l6-h384-squad11"
VOCAB = EMBEDDED / "vocab.txt"
# SQuAD v1.1 dev ships with the project (data/README.md): every data test runs in a fresh clone.
DEV = ROOT / "data" / "squad" / "dev-v1.1.json.gz"
DEV_SHA256 = "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9"  # of the uncompressed official file
TRAIN = SHARED / "data" / "squad" / "train-v1.1.reconstructed.json.gz"
HF_FIXTURES = ROOT / "tests" / "fixtures" / "hf"
# Calibration features of the quantized test models (speed; tests/test_quantize_accuracy.py uses the default 256).
QUANT_CALIB_NUM = 32
# The quantized artifacts under test: setting -> (precision, quantize() keyword arguments).
QUANT_SETTINGS = {
    "fp16": ("fp16", {}),
    "int8": ("int8", {}),  # the default: attention BMMs + FFN-down in float, FP16 for the float parts
    "int8-every-gemm-fp32": ("int8", {"exclude": (), "float_precision": "fp32"}),  # the former default, by flags
    "fp8": ("fp8", {}),
    # OpenVINO's recipe (SmoothQuant, every weight GEMM, FP32 rest) with the product's 256 calibration features: its
    # accuracy guard (test_openvino) reads 1000 questions, where 32 features cost another 0.3 F1
    "int8-openvino": ("int8", {"runtime": "openvino", "calib_num": 256}),
}
VOCAB_SIZE = 30522
# The passage NVIDIA's demo used, with its classic question "What is TensorRT?".
TENSORRT_PASSAGE = (
    "TensorRT is a high performance deep learning inference platform that delivers low latency and high "
    "throughput for apps such as recommenders, speech and image/video on NVIDIA GPUs. It includes parsers to "
    "import models, and plugins to support novel ops and layers before applying optimizations for inference. "
    "Today NVIDIA is open-sourcing parsers and plugins in TensorRT so that the deep learning community can "
    "customize and extend these components to take advantage of powerful TensorRT optimizations for your apps.")


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not available")
    return path


def read_dev() -> dict:
    """The parsed SQuAD v1.1 dev JSON (the shipped copy is gzip)."""
    import gzip
    import json

    return json.loads(gzip.decompress(DEV.read_bytes()))


def squad_scores(model: Path, tokenizer, output: Path, limit: int | None, options=None) -> dict:
    """EM/F1 of `model` (any bertrt QA artifact, via open_backend) on the first `limit` SQuAD dev questions, on the
    reference runtime of its kind (onnxruntime for ONNX, not the CPU default) unless `options` name a runtime."""
    import json

    from bertrt.session.answering import SquadParams
    from bertrt.runtimes import RunOptions, open_backend, reference_options
    from bertrt.session.squad import run_squad

    with open_backend(model, reference_options(model, options or RunOptions())) as backend:
        report = run_squad(backend, tokenizer, require(DEV), output, SquadParams(), batch_size=8, limit=limit,
                           progress=False)
    print(json.dumps({k: report[k] for k in ("questions", "features", "scores", "wall_seconds",
                                             "features_per_second")}))
    return report["scores"]


@pytest.fixture(scope="session")
def embedded_onnx(tmp_path_factory) -> Path:
    """The embedded checkpoint exported with `bertrt export` (tf2onnx takes ~30 s: once per session)."""
    from bertrt.export.onnx_export import export

    out = tmp_path_factory.mktemp("embedded") / "model.onnx"
    return export(EMBEDDED, out)


@pytest.fixture(scope="session")
def embedded_tf():
    """The TF reference network of the embedded checkpoint (the graph tf2onnx converted)."""
    from bertrt.export.onnx_export import read_weights, resolve_source
    from bertrt.checkpoints.tf_model import build_qa_function

    from bertrt.model_config import BertConfig

    cfg = BertConfig.from_json(EMBEDDED / "bert_config.json")
    return build_qa_function(read_weights(resolve_source(EMBEDDED), cfg), cfg)


@pytest.fixture(scope="session")
def tokenizer():
    from bertrt.qa.tokenizer import load_tokenizer

    return load_tokenizer(VOCAB, expected_vocab_size=VOCAB_SIZE)


@pytest.fixture(scope="session")
def dev_features(tokenizer):
    """Real SQuAD dev features: the first 24 questions (some with two windows), unpadded."""
    from bertrt.qa.features import make_features
    from bertrt.qa.squad_data import load_squad

    examples, _ = load_squad(require(DEV))
    return make_features(examples[:24], tokenizer)


@pytest.fixture(scope="session")
def dev_batch(dev_features) -> dict[str, np.ndarray]:
    """8 real features padded to the longest of them (so rows carry different amounts of padding)."""
    from bertrt.qa.features import collate

    chosen = dev_features[:8]
    return collate(chosen, max(f.length for f in chosen))


@pytest.fixture(scope="session")
def random_export(tmp_path_factory):
    """(layers, hidden, heads, gelu) -> (unfused random-weight export, cfg); one tf2onnx conversion per shape for
    the whole session, made on first use (every surgery target's tests share them)."""
    import onnx
    from bertrt.export.onnx_export import convert_to_onnx
    from bertrt.checkpoints.tf_model import build_qa_function
    from checkpoints import random_weights

    from bertrt.model_config import BertConfig
    from bertrt.qa_contract import stamp

    cache = {}

    def get(shape):
        if shape not in cache:
            layers, hidden, heads, gelu = shape
            cfg = BertConfig(vocab_size=128, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                             intermediate_size=4 * hidden, max_position_embeddings=384, gelu=gelu)
            weights = random_weights(cfg, seed=hidden)
            # Keep activations the same size at every width (std 0.2 kernels at hidden 768 make the scores so
            # large that fp32 rounding alone moves logits by 1e-3 between any two evaluation orders).
            for name in weights:
                if name.endswith("kernel"):
                    weights[name] *= np.float32(np.sqrt(64 / hidden))
            model = convert_to_onnx(build_qa_function(weights, cfg), 17)
            stamp(model, "export", cfg)
            path = tmp_path_factory.mktemp(f"random-l{layers}-h{hidden}") / "model.onnx"
            onnx.save(model, str(path))
            cache[shape] = (path, cfg)
        return cache[shape]

    return get


@pytest.fixture(scope="session")
def random_fused(random_export, tmp_path_factory):
    """(shape, target) -> (unfused export, fused model, cfg): one surgery per pair, made on first use."""
    from bertrt.surgery.pipeline import run_surgery

    cache = {}

    def get(shape, target):
        if (shape, target) not in cache:
            unfused, cfg = random_export(shape)
            fused = tmp_path_factory.mktemp(target) / f"model.{target}.onnx"
            run_surgery(unfused, fused, target)
            cache[shape, target] = (unfused, fused, cfg)
        return cache[shape, target]

    return get


@pytest.fixture(scope="session")
def embedded_native(embedded_onnx, tmp_path_factory) -> Path:
    """The embedded export fused for the `native` target."""
    from bertrt.surgery.pipeline import run_surgery

    out = tmp_path_factory.mktemp("native") / "model.native.onnx"
    run_surgery(embedded_onnx, out, "native")
    return out


@pytest.fixture(scope="session")
def quantized(embedded_onnx, embedded_native, tmp_path_factory):
    """(setting of QUANT_SETTINGS, target "export" | "native") -> (quantized model, report): one `bertrt quantize`
    per pair and session, calibrated on QUANT_CALIB_NUM features, made on first use."""
    from bertrt.calibration.quantize import quantize

    out = tmp_path_factory.mktemp("quantized")
    sources = {"export": embedded_onnx, "native": embedded_native}
    cache: dict[tuple[str, str], tuple[Path, dict]] = {}

    def get(setting: str, target: str = "export") -> tuple[Path, dict]:
        if (setting, target) not in cache:
            precision, options = QUANT_SETTINGS[setting]
            path = out / f"model.{target}.{setting}.onnx"
            cache[setting, target] = (path, quantize(sources[target], path, precision,
                                                     **{"calib_num": QUANT_CALIB_NUM, **options}))
        return cache[setting, target]

    return get
