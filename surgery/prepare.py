"""Load the input graph for surgery: accept a bertrt export or a Hugging Face (torch.onnx.export) BERT QA graph,
bring the latter to the bertrt I/O contract, then fold constants so the matchers see weights as constants.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from bertrt.surgery.probe import MAX_ORT_IR_VERSION, evaluate, probe_feed

from bertrt.errors import BertrtError
from bertrt.families import family_of_config
from bertrt.model_config import BertConfig
from bertrt.onnx_file import load_onnx
from bertrt.qa_contract import INPUT_NAMES, OUTPUT_NAMES, load_qa_model, metadata, stage_of

# Hugging Face input name -> bertrt input name (transformers' forward order is ids, mask, token types).
HF_INPUTS = {"input_ids": "input_ids", "token_type_ids": "segment_ids", "attention_mask": "input_mask"}
# Domains of fused blocks (onnxruntime contrib ops, TensorRT plugins): a graph with such nodes was fused already.
FUSED_DOMAINS = ("com.microsoft", "trt.plugins")


@dataclass
class Prepared:
    graph: gs.Graph
    cfg: BertConfig | None  # None for a foreign export: inferred from the matches (infer_config)
    source: str  # "bertrt" | "huggingface"
    ir_version: int


@contextlib.contextmanager
def _ort_loadable_exports() -> Iterator[None]:
    """graphsurgeon's fold_constants evaluates the graph with onnxruntime through export_onnx, which stamps onnx's
    newest IR version; onnxruntime refuses it and folding silently does nothing. Export at IR 11 meanwhile."""
    saved = onnx.IR_VERSION
    onnx.IR_VERSION = min(saved, MAX_ORT_IR_VERSION)
    try:
        yield
    finally:
        onnx.IR_VERSION = saved


def _adapt_hf(graph: gs.Graph) -> None:
    """Replace the HF inputs (int64) by int32 contract inputs, cast back to the original type inside the graph."""
    old = {t.name: t for t in graph.inputs}
    new_inputs = {}
    for hf_name, ours in HF_INPUTS.items():
        if hf_name not in old:  # RoBERTa, XLM-R, DistilBERT exports take no token_type_ids: segment_ids is unused
            new_inputs[ours] = gs.Variable(ours, np.int32, ["batch", "seq"])
            continue
        tensor = old[hf_name]
        tensor.name = f"{hf_name}.original"
        new = gs.Variable(ours, np.int32, ["batch", "seq"])
        to = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(tensor.dtype))
        graph.nodes.append(gs.Node("Cast", inputs=[new], outputs=[tensor], attrs={"to": to}))
        new_inputs[ours] = new
    graph.inputs = [new_inputs[name] for name in INPUT_NAMES]


def _refuse_fused(model: onnx.ModelProto, path: Path) -> None:
    """Surgery reads an unfused export; say so for a graph that bertrt (or another tool) fused already."""
    stage = stage_of(model)
    if stage.startswith("surgery:"):
        raise BertrtError(f"{path}: already fused by bertrt (target {stage.split(':', 1)[1]}); surgery takes the "
                          "unfused export")
    fused = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain in FUSED_DOMAINS})
    if fused:
        raise BertrtError(f"{path}: already fused (it has {', '.join(fused[:4])} nodes"
                          f"{', ...' if len(fused) > 4 else ''}); surgery takes the unfused export")


def prepare(path: str | Path) -> Prepared:
    """Load `path`, adapt a Hugging Face export to the bertrt contract, fold constants, clean up, toposort."""
    path = Path(path)
    model = load_onnx(path)
    _refuse_fused(model, path)
    inputs = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    outputs = sorted(o.name for o in model.graph.output)
    if "bertrt.config" in metadata(model):
        model, cfg = load_qa_model(path)
        source = "bertrt"
    elif (outputs == sorted(OUTPUT_NAMES) and set(HF_INPUTS) - {"token_type_ids"} <= set(inputs) <= set(HF_INPUTS)
          and all(t in (onnx.TensorProto.INT64, onnx.TensorProto.INT32) for t in inputs.values())):
        cfg, source = None, "huggingface"
    else:
        raise BertrtError(f"{path}: not a BERT QA graph: inputs {sorted(inputs)} -> outputs {outputs} are neither "
                          f"bertrt's {list(INPUT_NAMES)} -> {list(OUTPUT_NAMES)} nor Hugging Face's "
                          f"{sorted(HF_INPUTS)} -> {list(OUTPUT_NAMES)}")
    graph = gs.import_onnx(model)
    if source == "huggingface":
        _adapt_hf(graph)
    # Folding turns Constant nodes and constant subexpressions (e.g. transposed weights) into initializers, so
    # matchers read weights as values; shape-dependent parts (position slice, mask builder) stay dynamic.
    with _ort_loadable_exports():
        graph.fold_constants().cleanup().toposort()
    if source == "huggingface":
        _fold_shape_scalars(graph)
    return Prepared(graph, cfg, source, model.ir_version)


def _shape_only(t: gs.Tensor, seen: set[int]) -> bool:
    """True when `t` depends on the graph inputs only through Shape ops (its value is fixed by the shapes)."""
    if isinstance(t, gs.Constant):
        return True
    if not t.inputs:
        return False  # a graph input read for its values
    node = t.inputs[0]
    if node.op == "Shape" or id(node) in seen:
        return True
    seen.add(id(node))
    return all(_shape_only(i, seen) for i in node.inputs)


def _fold_shape_scalars(graph: gs.Graph) -> None:
    """Replace scalar factors computed from shapes (DistilBERT's SDPA export scales Q and K by
    sqrt(1 / sqrt(Shape(q)[-1])), which folding cannot see is a constant) by their value, proved the same at two
    sequence lengths, so the matchers read them as scalars."""
    candidates = [(node, i) for node in graph.nodes if node.op in ("Mul", "Div") for i, t in enumerate(node.inputs)
                  if not isinstance(t, gs.Constant) and t.inputs and t.inputs[0].op != "Shape"
                  and _shape_only(t, set())]
    if not candidates:
        return
    for node, i in candidates:
        try:
            a, b = (evaluate(graph, [node.inputs[i]], probe_feed(np.ones((2, seq))))[0] for seq in (5, 7))
        except Exception:  # noqa: BLE001 (an untyped integer tensor, say: not a float factor, left as is)
            continue
        if a.size == 1 and a.dtype.kind == "f" and np.array_equal(a, b):
            node.inputs[i] = gs.Constant(f"{node.name}_folded_scalar_{i}", np.asarray(a))
    graph.cleanup().toposort()


def infer_config(matches, family: str | None = None) -> BertConfig:
    """The BertConfig of a fully matched foreign export, read from its weights and structure. `family`: from the
    export's config.json where there is one; else the structure's family (see structural_family)."""
    emb = matches.embedding
    first = matches.layers[0]
    hidden = first.attention.num_heads * first.attention.head_size
    return BertConfig(
        vocab_size=emb.word_embeddings.shape[0],
        hidden_size=hidden,
        num_hidden_layers=len(matches.layers),
        num_attention_heads=first.attention.num_heads,
        intermediate_size=first.gelu.bias.shape[0],
        max_position_embeddings=emb.position_embeddings.shape[0],
        type_vocab_size=0 if emb.token_type_embeddings is None else emb.token_type_embeddings.shape[0],
        gelu=first.gelu.form,
        layer_norm_eps=emb.layernorm.epsilon,
        position_offset=emb.position_offset,
        embedding_size=emb.word_embeddings.shape[1] if emb.projection is not None else 0,
        family=family or structural_family(emb),
    )


def structural_family(emb) -> str:
    """The family an export's embeddings show (RoBERTa and XLM-R look the same: their config.json tells)."""
    if emb.projection is not None:
        return "electra"
    if emb.position_offset:
        return "roberta"
    return "bert" if emb.token_type_embeddings is not None else "distilbert"


def export_family(path: Path) -> str | None:
    """The family named by the config.json beside a Hugging Face export (None without one); other families are
    refused in one line."""
    config = path.parent / "config.json"
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return family_of_config(data).name if isinstance(data, dict) and "model_type" in data else None
