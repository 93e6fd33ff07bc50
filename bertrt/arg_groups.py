"""Flag groups shared by the subcommands (as Polygraphy's `tools/args`): each group is defined once, here, with its
spelling, help and config fallback, and every subcommand that needs it adds the same group (no subcommand defines
these flags itself) and reads it back through the same function.

- model:   --model (the QA model: .onnx / .engine / checkpoint), --vocab (also alone: `add_vocab_arg`)
- backend: --runtime (a registered runtime), --provider (cpu | cuda), --threads, --buckets, --cuda-graph,
           --precision (runtimes that take one) -> a `bertrt.runtimes.RunOptions` (`backend_options`, `run_options`)
- shapes:  --batch-size, --seq-len (one value, or several for grids such as `perf`)
- squad:   --doc-stride, --max-query-length, --n-best, --max-answer-length -> `squad_params`
- session: all four (infer, squad, triton-repo, serve, serve-bench) -> `session_args`

Older spellings (`--max-seq-length`, `--seq`, `--batch`) are accepted as aliases of the one flag. A flag that only
one stage has, or that means something else there (build's `--model` is the ONNX to build), is that stage's own.
"""

from __future__ import annotations

import argparse

from pathlib import Path

from bertrt.errors import BertrtError
from bertrt.inputs import check_threads
from bertrt.pipeline_config import PipelineConfig
from bertrt.runtimes import PROVIDERS, RunOptions, registered, runtime_names
from bertrt.runtimes.buckets import parse_buckets
from bertrt.session import SquadParams, run_options as session_run_options


def pick(value, cfg: PipelineConfig, section: str, key: str):
    """A flag's value, else the config's."""
    return value if value is not None else cfg.get(section, key)


def required(value, what: str):
    if value is None:
        raise BertrtError(f"no {what} given (use the flag or set it in the config)")
    return value


# --- model ----------------------------------------------------------------------------------------------------
def add_model_args(p, several: bool = False, vocab: bool = True, required: bool = True) -> None:
    help_ = "QA model: .onnx from bertrt, or an .engine from `bertrt build` (default out/<config>/model.onnx)"
    if several:
        p.add_argument("--model", type=Path, action="append", required=required, default=[],
                       help=help_ + "; repeat to compare")
    else:
        p.add_argument("--model", type=Path, help=help_)
    if vocab:
        add_vocab_arg(p)


def add_vocab_arg(p, purpose: str = "") -> None:
    """--vocab alone (compare, and the calibration features of quantize/build/calibrate)."""
    p.add_argument("--vocab", type=Path, help=f"vocab.txt or tokenizer.json{purpose} (default: the tokenizer stored "
                                              "with the model, else the config's)")


def default_model(cfg: PipelineConfig) -> Path:
    """The config's exported model, out/<config>/model.onnx."""
    return cfg.out_dir / "model.onnx"


def model_path(args, cfg: PipelineConfig) -> Path:
    model = args.model or default_model(cfg)
    if args.model is None and not model.exists():
        raise BertrtError(f"{model}: no model yet (run `bertrt export` or `make export` first, or give --model)")
    return model


def vocab_path(args, cfg: PipelineConfig) -> Path | None:
    """--vocab: overrides the tokenizer that travels with the model (None: use that one)."""
    return args.vocab


def fallback_vocab(cfg: PipelineConfig) -> Path | None:
    """The config's vocab: for models made before the tokenizer travelled with them."""
    value = cfg.get("model", "vocab")
    return Path(value) if value else None


# --- backend --------------------------------------------------------------------------------------------------
def add_backend_args(p) -> None:
    # The runtime choices and the precision help come from the registry: a registered runtime shows up here.
    p.add_argument("--runtime", choices=runtime_names(),
                   help="how the model runs (default: the first registered runtime that runs it with these options): "
                        + "; ".join(f"{r.name}: {r.description}" for r in registered()))
    p.add_argument("--provider", choices=PROVIDERS, help="where a runtime that has a choice runs (onnxruntime's "
                                                         "execution provider; default: the config's run.provider)")
    p.add_argument("--threads", type=int, help="intra-op threads (default: all cores)")
    p.add_argument("--buckets", help="sequence-length buckets, e.g. 128,192,256,320,384 (default with --provider "
                                     "cuda; each batch is padded to its bucket and to --batch-size rows)")
    p.add_argument("--batch-rows", help="with buckets: smaller row counts a batch of fewer windows is padded to "
                                        "instead of --batch-size, e.g. 1,4,16 (each one more warmed-up shape per "
                                        "bucket; default: none)")
    p.add_argument("--cuda-graph", action=argparse.BooleanOptionalAction,
                   help="--provider cuda: replay one onnxruntime CUDA graph per bucket (default: off; on for `serve` "
                        "on cuda)")
    takers = [f"{r.name}: {', '.join(r.precisions)}" for r in registered() if r.precisions]
    p.add_argument("--precision", help="inference precision, for runtimes that take one ("
                                       + ("; ".join(takers) or "none registered") + ")")


def backend_options(args, cfg: PipelineConfig) -> RunOptions:
    """The `bertrt.runtimes.RunOptions` of the backend flags (what `open_backend` takes)."""
    check_threads("--threads", args.threads)
    return RunOptions(runtime=args.runtime, provider=pick(args.provider, cfg, "run", "provider"),
                      threads=args.threads, buckets=parse_buckets(args.buckets) if args.buckets else None,
                      batch_rows=parse_buckets(args.batch_rows, "--batch-rows") if args.batch_rows else None,
                      cuda_graph=bool(args.cuda_graph), precision=args.precision)


# --- shapes ---------------------------------------------------------------------------------------------------
def add_shape_args(p, several: bool = False, batch_default=None, seq_default=None) -> None:
    nargs = "+" if several else None
    p.add_argument("--batch-size", "--batch", dest="batch_size", type=int, nargs=nargs, default=batch_default,
                   help="batch size" + ("s" if several else "") + " (default: the config's run.batch_size)")
    p.add_argument("--seq-len", "--max-seq-length", "--seq", dest="seq_len", type=int, nargs=nargs,
                   default=seq_default,
                   help="padded sequence length" + ("s" if several else "") +
                        " (default: the config's squad.max_seq_length)")


def shapes(args, cfg: PipelineConfig) -> tuple:
    """(batch size(s), sequence length(s)), each checked positive."""
    batch = pick(args.batch_size, cfg, "run", "batch_size")
    seq = pick(args.seq_len, cfg, "squad", "max_seq_length")
    for flag, value in (("--batch-size", batch), ("--seq-len", seq)):
        values = value if isinstance(value, list) else [value]
        if any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
            raise BertrtError(f"{flag} must be a positive integer, got {value!r}")
    return batch, seq


# --- squad pre/post-processing --------------------------------------------------------------------------------
def add_squad_args(p) -> None:
    p.add_argument("--doc-stride", type=int, help="tokens between passage windows (default: the config's "
                                                   "squad.doc_stride, 128)")
    p.add_argument("--max-query-length", type=int, help="question tokens kept (default: the config's "
                                                         "squad.max_query_length, 64)")
    p.add_argument("--n-best", type=int, help="start/end candidates per window (default: the config's squad.n_best, "
                                              "20)")
    p.add_argument("--max-answer-length", type=int, help="longest answer in tokens (default: the config's "
                                                          "squad.max_answer_length, 30)")


def squad_params(args, cfg: PipelineConfig, seq_len: int) -> SquadParams:
    values = {k: pick(getattr(args, k, None), cfg, "squad", k) for k in SquadParams.__dataclass_fields__
              if k != "max_seq_length"}
    return SquadParams(max_seq_length=seq_len, **values)


# --- session: what a QA session is opened with ---------------------------------------------------------------------
def add_session_args(p) -> None:
    """Everything a `QASession` is opened with: model, runtime options, shapes and SQuAD parameters."""
    add_model_args(p)
    add_backend_args(p)
    add_shape_args(p)
    add_squad_args(p)


def run_options(args, cfg: PipelineConfig, batch_size: int) -> RunOptions:
    return session_run_options(backend_options(args, cfg), batch_size=batch_size)


def session_args(args, cfg: PipelineConfig) -> tuple[Path, Path, SquadParams, RunOptions]:
    """(model, vocab, SQuAD parameters, run options) from the session flag group, for `QASession` or a Triton
    repository's parameters."""
    batch_size, seq_len = shapes(args, cfg)
    return (model_path(args, cfg), vocab_path(args, cfg), squad_params(args, cfg, seq_len),
            run_options(args, cfg, batch_size))
