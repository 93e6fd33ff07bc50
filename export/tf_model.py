"""The BERT QA network in TensorFlow, built from checked weights (the graph tf2onnx converts, and the TF reference).

The graph keeps BERT's textbook structure (rank-3 MatMul+Add projections, explicit LayerNorm and GELU, additive
-10000 attention mask as in Google's BERT) so that the surgery matchers see the same blocks as in other exports.
"""

from __future__ import annotations

import math

import numpy as np
from bertrt.export.weights import Weights

from bertrt.model_config import BertConfig
from bertrt.qa_contract import INPUT_NAMES
from bertrt.extras import require


def build_qa_function(weights: Weights, cfg: BertConfig):
    """A tf.function (input_ids, segment_ids, input_mask: int32 [B, S]) -> (start_logits, end_logits) [B, S]."""
    tf = require("tensorflow", "export")
    # Variables, not captured constants: tf2onnx freezes captured variables into initializers, while captured
    # eager constants would become extra graph inputs.
    w = {name: tf.Variable(value, trainable=False, name=name.replace("/", "_")) for name, value in weights.items()}
    n_heads, head = cfg.num_attention_heads, cfg.head_size

    def layer_norm(x, prefix):
        mean = tf.reduce_mean(x, axis=-1, keepdims=True)
        centered = x - mean
        var = tf.reduce_mean(tf.square(centered), axis=-1, keepdims=True)
        return centered * tf.math.rsqrt(var + cfg.layer_norm_eps) * w[f"{prefix}/gamma"] + w[f"{prefix}/beta"]

    def dense(x, prefix):
        return tf.matmul(x, w[f"{prefix}/kernel"]) + w[f"{prefix}/bias"]

    def gelu(x):
        if cfg.gelu == "tanh":  # Google's original approximation
            return 0.5 * x * (1.0 + tf.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))
        return 0.5 * x * (1.0 + tf.math.erf(x / math.sqrt(2.0)))

    def split_heads(x, batch, seq):
        return tf.transpose(tf.reshape(x, [batch, seq, n_heads, head]), [0, 2, 1, 3])

    spec = [tf.TensorSpec([None, None], tf.int32, name=name) for name in INPUT_NAMES]

    @tf.function(input_signature=spec)
    def qa(input_ids, segment_ids, input_mask):
        batch, seq = tf.shape(input_ids)[0], tf.shape(input_ids)[1]
        emb = (tf.gather(w["bert/embeddings/word_embeddings"], input_ids)
               + tf.gather(w["bert/embeddings/token_type_embeddings"], segment_ids)
               + tf.slice(w["bert/embeddings/position_embeddings"], [0, 0], [seq, -1])[tf.newaxis])
        x = layer_norm(emb, "bert/embeddings/LayerNorm")
        # [B, 1, 1, S]: 0 for real tokens, -10000 for padding (Google BERT's additive mask).
        mask_bias = (1.0 - tf.cast(input_mask, tf.float32)[:, tf.newaxis, tf.newaxis, :]) * -10000.0
        for n in range(cfg.num_hidden_layers):
            p = f"bert/encoder/layer_{n}"
            q = split_heads(dense(x, f"{p}/attention/self/query"), batch, seq)
            k = split_heads(dense(x, f"{p}/attention/self/key"), batch, seq)
            v = split_heads(dense(x, f"{p}/attention/self/value"), batch, seq)
            scores = tf.matmul(q, k, transpose_b=True) * (1.0 / math.sqrt(head)) + mask_bias
            ctx = tf.matmul(tf.nn.softmax(scores, axis=-1), v)
            ctx = tf.reshape(tf.transpose(ctx, [0, 2, 1, 3]), [batch, seq, cfg.hidden_size])
            x = layer_norm(dense(ctx, f"{p}/attention/output/dense") + x, f"{p}/attention/output/LayerNorm")
            inter = gelu(dense(x, f"{p}/intermediate/dense"))
            x = layer_norm(dense(inter, f"{p}/output/dense") + x, f"{p}/output/LayerNorm")
        logits = tf.matmul(x, w["cls/squad/output_weights"], transpose_b=True) + w["cls/squad/output_bias"]
        # A dict: tf2onnx names the graph outputs after its keys.
        return {"start_logits": logits[:, :, 0], "end_logits": logits[:, :, 1]}

    return qa


def run_tf(qa_function, feed: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Run the TF reference on int32 [B, S] inputs."""
    out = qa_function(*(feed[name].astype(np.int32) for name in INPUT_NAMES))
    return out["start_logits"].numpy(), out["end_logits"].numpy()
