"""Export a Hugging Face QA folder of any family (bertrt/families) without torch or TensorFlow: read config.json
and the weights (model.safetensors, sharded safetensors with model.safetensors.index.json, or pytorch_model.bin
through ``torch.load(weights_only=True)`` when torch is installed), then write the unfused bertrt-contract ONNX
graph directly with onnx.helper, in the form torch.onnx's legacy exporter gives (opset 17 LayerNormalization,
MatMul + bias Add, explicit attention), so `bertrt surgery` fuses it like any export.

The graph per family: ``word[ids] (+ type[segment_ids]) + position[offset:offset+S]`` -> LayerNorm (-> ELECTRA's
projection) -> layers -> QA head. Families without token types have no type term: the checkpoint's one-row table
(RoBERTa) is the row HF adds to every token, folded into the position table, which is also shifted by the
family's offset (RoBERTa's padding_idx + 1), so row s is what HF adds at position s of a sequence without padding
inside it. segment_ids stays an input (the bertrt contract) and is unused there.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from bertrt.errors import BertrtError
from bertrt.families import Family, family_of_config
from bertrt.model_config import BertConfig, parse_json_strict
from bertrt.qa_contract import INPUT_NAMES, OUTPUT_NAMES

OPSET = 17
MASK_FILTER = float(np.finfo(np.float32).min)  # transformers' mask value
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def is_hf_folder(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file() and any((path / f).is_file() for f in WEIGHT_FILES)


def read_config(directory: Path) -> tuple[Family, BertConfig, dict]:
    path = directory / "config.json"
    try:
        raw = parse_json_strict(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BertrtError(f"{path}: not a JSON config ({str(exc).splitlines()[0][:200]})") from None
    if not isinstance(raw, dict):
        raise BertrtError(f"{path}: not a JSON object")
    family = family_of_config(raw)
    heads = raw.get("architectures") or []
    if isinstance(heads, list) and heads and not any(str(h).endswith("ForQuestionAnswering") for h in heads):
        raise BertrtError(f"{path}: architectures {heads} has no question-answering head (qa_outputs); bertrt "
                          f"exports {family.architectures[0]} checkpoints (fine-tuned for extractive QA)")
    return family, family.normalize_config(raw, source=str(path)), raw


def weight_files(directory: Path) -> list[Path]:
    """The weight files export reads, in order: safetensors (or its shards, by the index), else pytorch_model.bin."""
    if (directory / "model.safetensors").is_file():
        return [directory / "model.safetensors"]
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            mapping = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(mapping.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise BertrtError(f"{index}: not a safetensors index (no weight_map)") from None
        for shard in shards:
            if Path(shard).name != shard or not (directory / shard).is_file():
                raise BertrtError(f"{index}: shard {shard!r} is not a file in {directory}")
        return [index, *(directory / s for s in shards)]
    if (directory / "pytorch_model.bin").is_file():
        return [directory / "pytorch_model.bin"]
    raise BertrtError(f"{directory}: no model.safetensors, model.safetensors.index.json or pytorch_model.bin")


def _read_tensors(files: list[Path]) -> dict[str, np.ndarray]:
    if files[0].name == "pytorch_model.bin":
        return _read_torch_bin(files[0])
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    tensors: dict[str, np.ndarray] = {}
    for path in files[1:] if files[0].name.endswith(".index.json") else files:
        try:
            tensors.update(load_file(str(path)))
        except (SafetensorError, OSError, ValueError) as exc:
            raise BertrtError(f"{path}: unreadable safetensors file ({str(exc).splitlines()[0]})") from None
    return tensors


def _read_torch_bin(path: Path) -> dict[str, np.ndarray]:
    """pytorch_model.bin is a pickle: loaded only by torch, only with weights_only=True (no code runs)."""
    try:
        import torch
    except ImportError:
        raise BertrtError(f"{path}: pickled weights are not loaded without torch (unpickling can run code); "
                          "convert to model.safetensors, or install torch so bertrt loads them with "
                          "torch.load(weights_only=True)") from None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (torch raises UnpicklingError, RuntimeError, ... for bad files)
        raise BertrtError(f"{path}: torch.load(weights_only=True) refused it ({str(exc).splitlines()[0][:200]})") \
            from None
    return {k: v.detach().float().numpy() for k, v in state.items() if hasattr(v, "detach")}


def read_weights(directory: Path, family: Family, cfg: BertConfig) -> dict[str, np.ndarray]:
    """The checkpoint in bertrt's (Google) names and layout, checked against the config."""
    files = weight_files(directory)
    weights = {}
    for name, value in _read_tensors(files).items():
        mapped = family.google_name(name)
        if mapped is None:
            if name.endswith("position_ids") or name.endswith("token_type_ids") or ".pooler." in name:
                continue  # buffers and heads the QA network does not use
            raise BertrtError(f"{files[0]}: unexpected tensor {name!r}: not a {family.architectures[0]} "
                              "checkpoint?")
        google, transpose = mapped
        arr = np.asarray(value, dtype=np.float32)
        weights[google] = np.ascontiguousarray(arr.T) if transpose else arr
    _check_shapes(weights, cfg, str(files[0]))
    return weights


def _expected(cfg: BertConfig) -> dict[str, tuple[int, ...]]:
    h, i, e = cfg.hidden_size, cfg.intermediate_size, cfg.embedding_size or cfg.hidden_size
    shapes = {"bert/embeddings/word_embeddings": (cfg.vocab_size, e),
              "bert/embeddings/position_embeddings": (cfg.max_position_embeddings + cfg.position_offset, e),
              "bert/embeddings/LayerNorm/gamma": (e,), "bert/embeddings/LayerNorm/beta": (e,),
              "cls/squad/output_weights": (h, 2), "cls/squad/output_bias": (2,)}
    if cfg.token_types:
        shapes["bert/embeddings/token_type_embeddings"] = (cfg.type_vocab_size, e)
    if cfg.embedding_size:
        shapes["bert/embeddings/project/kernel"] = (e, h)
        shapes["bert/embeddings/project/bias"] = (h,)
    for n in range(cfg.num_hidden_layers):
        p = f"bert/encoder/layer_{n}/"
        for part, rows, cols in (("attention/self/query", h, h), ("attention/self/key", h, h),
                                 ("attention/self/value", h, h), ("attention/output/dense", h, h),
                                 ("intermediate/dense", h, i), ("output/dense", i, h)):
            shapes[f"{p}{part}/kernel"] = (rows, cols)
            shapes[f"{p}{part}/bias"] = (cols,)
        for norm in ("attention/output/LayerNorm", "output/LayerNorm"):
            shapes[f"{p}{norm}/gamma"] = (h,)
            shapes[f"{p}{norm}/beta"] = (h,)
    return shapes


def _check_shapes(weights: dict[str, np.ndarray], cfg: BertConfig, source: str) -> None:
    if "cls/squad/output_weights" in weights:  # HF's qa_outputs Linear is [2, h]; the graph multiplies by [h, 2]
        weights["cls/squad/output_weights"] = weights["cls/squad/output_weights"].T
    for name, shape in _expected(cfg).items():
        if name not in weights:
            raise BertrtError(f"{source}: missing tensor for {name!r}")
        if tuple(weights[name].shape) != shape:
            raise BertrtError(f"{source}: {name!r} has shape {list(weights[name].shape)}, expected {list(shape)} "
                              "from config.json")
        if not np.all(np.isfinite(weights[name])):
            raise BertrtError(f"{source}: {name!r} holds NaN or Inf")
    if not cfg.token_types and "bert/embeddings/token_type_embeddings" in weights:
        rows = weights["bert/embeddings/token_type_embeddings"]
        if rows.ndim != 2 or rows.shape[1] != weights["bert/embeddings/word_embeddings"].shape[1]:
            raise BertrtError(f"{source}: token_type_embeddings has shape {list(rows.shape)}")


class _Graph:
    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def const(self, name: str, value, dtype=np.float32) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=dtype), name))
        return name

    def op(self, op: str, inputs: list[str], name: str | None = None, outputs: int = 1, **attrs):
        self.count += 1
        name = name or f"{op}_{self.count}"
        outs = [f"{name}_out{i}" for i in range(outputs)] if outputs > 1 else [f"{name}_out"]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, **attrs))
        return outs if outputs > 1 else outs[0]

    def dense(self, x: str, w: dict, prefix: str, name: str) -> str:
        mm = self.op("MatMul", [x, self.const(f"{name}.weight", w[f"{prefix}/kernel"])], f"{name}/MatMul")
        return self.op("Add", [self.const(f"{name}.bias", w[f"{prefix}/bias"]), mm], f"{name}/Add")

    def layernorm(self, x: str, w: dict, prefix: str, name: str, eps: float) -> str:
        return self.op("LayerNormalization", [x, self.const(f"{name}.weight", w[f"{prefix}/gamma"]),
                                              self.const(f"{name}.bias", w[f"{prefix}/beta"])], name,
                       axis=-1, epsilon=eps)


def build_model(w: dict[str, np.ndarray], cfg: BertConfig) -> onnx.ModelProto:
    """The unfused bertrt-contract graph for normalized weights `w` (see read_weights)."""
    g = _Graph()
    ids, segments, mask = INPUT_NAMES
    emb = "bert/embeddings/"
    positions = w[f"{emb}position_embeddings"][cfg.position_offset:]
    if not cfg.token_types and f"{emb}token_type_embeddings" in w:  # the row HF adds to every token
        positions = positions + w[f"{emb}token_type_embeddings"][0]
    x = g.op("Gather", [g.const("embeddings.word_embeddings.weight", w[f"{emb}word_embeddings"]), ids],
             "embeddings/word", axis=0)
    if cfg.token_types:
        types = g.op("Gather", [g.const("embeddings.token_type_embeddings.weight", w[f"{emb}token_type_embeddings"]),
                                segments], "embeddings/token_type", axis=0)
        x = g.op("Add", [x, types], "embeddings/add_types")
    shape = g.op("Shape", [ids], "embeddings/shape")
    seq = g.op("Slice", [shape, g.const("embeddings.one", [1], np.int64), g.const("embeddings.two", [2], np.int64)],
               "embeddings/seq")
    pos = g.op("Slice", [g.const("embeddings.position_embeddings.weight", positions),
                         g.const("embeddings.zero", [0], np.int64), seq, g.const("embeddings.axis0", [0], np.int64)],
               "embeddings/positions")
    x = g.op("Add", [x, pos], "embeddings/add_positions")
    x = g.layernorm(x, w, f"{emb}LayerNorm", "embeddings/LayerNorm", cfg.layer_norm_eps)
    if cfg.embedding_size:
        x = g.dense(x, w, f"{emb}project", "embeddings_project")

    m = g.op("Cast", [mask], "mask/cast", to=TensorProto.FLOAT)
    m = g.op("Sub", [g.const("mask.one", np.float32(1.0)), m], "mask/padding")
    m = g.op("Mul", [m, g.const("mask.filter", np.float32(MASK_FILTER))], "mask/bias")
    bias = g.op("Unsqueeze", [m, g.const("mask.axes", [1, 2], np.int64)], "mask/unsqueeze")
    n_heads, head = cfg.num_attention_heads, cfg.head_size
    heads_shape = g.const("heads.shape", [0, 0, n_heads, head], np.int64)
    merge_shape = g.const("merge.shape", [0, 0, cfg.hidden_size], np.int64)
    scale = g.const("attention.scale", np.float32(1.0 / math.sqrt(head)))
    for n in range(cfg.num_hidden_layers):
        p, name = f"bert/encoder/layer_{n}/", f"layer.{n}"
        q, k, v = (g.op("Reshape", [g.dense(x, w, f"{p}attention/self/{part}", f"{name}.{part}"), heads_shape],
                        f"{name}/{part}/split") for part in ("query", "key", "value"))
        q = g.op("Transpose", [q], f"{name}/q_heads", perm=[0, 2, 1, 3])
        kt = g.op("Transpose", [k], f"{name}/k_heads", perm=[0, 2, 3, 1])
        v = g.op("Transpose", [v], f"{name}/v_heads", perm=[0, 2, 1, 3])
        scores = g.op("Mul", [g.op("MatMul", [q, kt], f"{name}/scores"), scale], f"{name}/scale")
        probs = g.op("Softmax", [g.op("Add", [scores, bias], f"{name}/mask")], f"{name}/softmax", axis=-1)
        ctx = g.op("Transpose", [g.op("MatMul", [probs, v], f"{name}/context")], f"{name}/merge", perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, merge_shape], f"{name}/merged")
        att = g.op("Add", [g.dense(ctx, w, f"{p}attention/output/dense", f"{name}.attention.output"), x],
                   f"{name}/attention_residual")
        x = g.layernorm(att, w, f"{p}attention/output/LayerNorm", f"{name}/attention/LayerNorm", cfg.layer_norm_eps)
        y = g.dense(x, w, f"{p}intermediate/dense", f"{name}.intermediate")
        y = _gelu(g, y, cfg.gelu, f"{name}/gelu")
        ffn = g.op("Add", [g.dense(y, w, f"{p}output/dense", f"{name}.output"), x], f"{name}/ffn_residual")
        x = g.layernorm(ffn, w, f"{p}output/LayerNorm", f"{name}/output/LayerNorm", cfg.layer_norm_eps)

    logits = g.op("Add", [g.const("qa_outputs.bias", w["cls/squad/output_bias"]),
                          g.op("MatMul", [x, g.const("qa_outputs.weight", w["cls/squad/output_weights"])],
                               "qa_outputs/MatMul")], "qa_outputs/Add")
    start, end = g.op("Split", [logits, g.const("qa.split", [1, 1], np.int64)], "qa/split", outputs=2, axis=-1)
    axes = g.const("qa.axes", [2], np.int64)
    g.nodes += [helper.make_node("Squeeze", [start, axes], [OUTPUT_NAMES[0]], name="qa/start"),
                helper.make_node("Squeeze", [end, axes], [OUTPUT_NAMES[1]], name="qa/end")]
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT32, ["batch", "seq"]) for name in INPUT_NAMES]
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", "seq"]) for name in OUTPUT_NAMES]
    graph = helper.make_graph(g.nodes, f"{cfg.family}_qa", inputs, outputs, g.inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)


def _gelu(g: _Graph, y: str, form: str, name: str) -> str:
    if form == "erf":  # torch.onnx's node order: Div, Erf, Add, Mul, Mul
        inner = g.op("Erf", [g.op("Div", [y, g.const(f"{name}.sqrt2", np.float32(math.sqrt(2.0)))], f"{name}/div")],
                     f"{name}/erf")
    else:
        cube = g.op("Pow", [y, g.const(f"{name}.three", np.float32(3.0))], f"{name}/cube")
        arg = g.op("Add", [y, g.op("Mul", [cube, g.const(f"{name}.coef", np.float32(0.044715))], f"{name}/coef")],
                   f"{name}/cubic")
        inner = g.op("Tanh", [g.op("Mul", [arg, g.const(f"{name}.scale", np.float32(math.sqrt(2.0 / math.pi)))],
                                   f"{name}/scale")], f"{name}/tanh")
    one_plus = g.op("Add", [inner, g.const(f"{name}.one", np.float32(1.0))], f"{name}/one_plus")
    return g.op("Mul", [g.op("Mul", [y, one_plus], f"{name}/times_x"), g.const(f"{name}.half", np.float32(0.5))],
                f"{name}/half")
