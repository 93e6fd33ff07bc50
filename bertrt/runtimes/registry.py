"""The one registry of runtimes, keyed by artifact kind and runtime name, and `open_backend`, the one entry that
infer, squad, compare, perf and serving open a QA model through.

A `Runtime` declares what it runs (artifact kind; for ONNX models, the model's target is asked whether it runs on
it), whether it is installed here, which options it takes, when it is the default, and how it opens an artifact
into a `QABackend`. `open_backend` reads the artifact, chooses the runtime (the one named in `RunOptions.runtime`,
else the first registered default), checks the options against it, and opens it. Checks that need no device happen
here; device work (an engine's deserialization) happens on activation (`with backend:`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from bertrt.errors import BertrtError
from bertrt.runtimes.artifact import ARTIFACT_KINDS, Artifact, read_artifact
from bertrt.runtimes.base import REQUESTS, QABackend, QuantRecipe, RunOptions, run_options

# How a refusal names each request (RunOptions field) to the user.
_REQUEST_NAMES = {"extra_outputs": "per-layer outputs (--per-layer)", "precision": "--precision",
                  "cuda_stream": "a CUDA stream of the caller", "device_id": "a GPU device id (serve --gpus)"}


@dataclass(frozen=True)
class Runtime:
    name: str  # --runtime NAME
    artifact: str  # the artifact kind it runs: one of ARTIFACT_KINDS
    description: str  # one line (docs, --help)
    open: Callable[[Artifact, RunOptions], QABackend]  # no device work here: that waits for activation
    requires: tuple[str, ...] = ()  # Python modules it imports (checked without importing them)
    requires_any: tuple[str, ...] = ()  # ... and modules of which it needs one (alternative libraries)
    install: str = ""  # what installs them, e.g. "pip install 'bertrt[export]'"
    providers: tuple[str, ...] | None = None  # --provider values it runs on; None: it has no use for --provider
    takes: frozenset[str] = frozenset()  # the REQUESTS it honours; the others are refused in one line
    precisions: tuple[str, ...] = ()  # the --precision values it takes (with "precision" in `takes`)
    default_when: Callable[[RunOptions], bool] | None = None  # it is the default for these options; None: never
    check: Callable[[Artifact, RunOptions], None] | None = None  # its own refusals (one-line BertrtErrors)
    # The reference of its artifact kind: what other runtimes are checked against (compare's side A when no runtime
    # is named), which need not be the fastest default.
    reference: bool = False
    # How INT8 models are best made for it (`bertrt quantize --runtime`, `bertrt optimize`); None: quantize's own
    # defaults (the TensorRT placement).
    int8: QuantRecipe | None = None

    def missing(self) -> str | None:
        """Why it cannot run here (one line naming what to install), or None when it can."""
        absent = [m for m in self.requires if importlib.util.find_spec(m) is None]
        if self.requires_any and all(importlib.util.find_spec(m) is None for m in self.requires_any):
            absent.append(" or ".join(self.requires_any))
        if not absent:
            return None
        return f"the {self.name} runtime needs {', '.join(absent)}, not installed here ({self.install})"

    def runs(self, artifact: Artifact) -> bool:
        """It runs this artifact: its kind, and for a graph, the graph's target says it runs on it."""
        return self.artifact == artifact.kind and (artifact.target is None or artifact.target.runs_on(self.name))


_REGISTRY: dict[str, Runtime] = {}  # in order of registration: the order of preference for defaults


def register(runtime: Runtime) -> Runtime:
    """Add a runtime (the one line that makes a runtime module part of bertrt); returns it."""
    if runtime.artifact not in ARTIFACT_KINDS:
        raise BertrtError(f"runtime {runtime.name!r}: unknown artifact kind {runtime.artifact!r} (known: "
                          f"{', '.join(ARTIFACT_KINDS)})")
    if runtime.name in _REGISTRY:
        raise BertrtError(f"a runtime named {runtime.name!r} is already registered")
    unknown = set(runtime.takes) - set(REQUESTS)
    if unknown:
        raise BertrtError(f"runtime {runtime.name!r} takes unknown requests {sorted(unknown)} (known: "
                          f"{', '.join(REQUESTS)})")
    _REGISTRY[runtime.name] = runtime
    return runtime


def unregister(name: str) -> None:
    """Remove a registered runtime (tests that register a fake one)."""
    _REGISTRY.pop(name, None)


def registered(kind: str | None = None) -> list[Runtime]:
    """The registered runtimes (of one artifact kind), in order of preference."""
    return [r for r in _REGISTRY.values() if kind is None or r.artifact == kind]


def runtime_names() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_runtime(name: str) -> Runtime:
    if name not in _REGISTRY:
        raise BertrtError(f"unknown runtime {name!r} (registered: {', '.join(_REGISTRY)})")
    return _REGISTRY[name]


def _kind_label(kind: str) -> str:
    return {"onnx": "ONNX models", "engine": "engines", "checkpoint": "checkpoints"}[kind]


def choose_runtime(artifact: Artifact, options: RunOptions) -> Runtime:
    """The runtime named in the options (refused in one line when it cannot run this artifact here), else the
    first registered runtime of the artifact's kind that is the default for these options, is installed and runs
    the artifact's target."""
    where = artifact.path
    if options.runtime is not None:
        runtime = get_runtime(options.runtime)
        if runtime.artifact != artifact.kind:
            others = [r.name for r in registered(artifact.kind)]
            raise BertrtError(f"{where}: the {runtime.name} runtime runs {_kind_label(runtime.artifact)}, not "
                              f"{_kind_label(artifact.kind)} (runtimes for those: {', '.join(others)})")
        if not runtime.runs(artifact):
            able = [r.name for r in registered(artifact.kind) if r.runs(artifact)]
            target = artifact.target  # it says why (the ops the runtime lacks) and what to build instead, if it can
            why = f"; {target.why_not(runtime.name, artifact.model)}" if target.runtime_refusal else ""
            raise BertrtError(f"{where}: the {runtime.name} runtime cannot run the `{target.name}` target "
                              f"(runtimes that can: {', '.join(able) or 'none registered'}){why}")
        if runtime.providers is not None and options.provider not in runtime.providers:
            raise BertrtError(f"{where}: the {runtime.name} runtime runs on {', '.join(runtime.providers)}, not "
                              f"--provider {options.provider}")
        reason = runtime.missing()
        if reason:
            raise BertrtError(f"{where}: {reason}")
        return runtime
    candidates = [r for r in registered(artifact.kind) if r.default_when is not None and r.runs(artifact)
                  and (r.providers is None or options.provider in r.providers) and r.default_when(options)]
    for runtime in candidates:
        if runtime.missing() is None:
            return runtime
    if candidates:
        raise BertrtError(f"{where}: {candidates[0].missing()}")
    target = f" of the `{artifact.target.name}` target" if artifact.target is not None else ""
    raise BertrtError(f"{where}: no registered runtime runs {_kind_label(artifact.kind)}{target} with --provider "
                      f"{options.provider} by default (registered for {_kind_label(artifact.kind)}: "
                      f"{', '.join(r.name for r in registered(artifact.kind)) or 'none'})")


def default_runtime(kind: str, options: RunOptions | None = None) -> Runtime | None:
    """The runtime an artifact of `kind` runs on by default here (the first registered default for `options` that
    is installed), or None. For a model not made yet: its target is not asked (`choose_runtime` is, on opening)."""
    options = options or RunOptions()
    return next((r for r in registered(kind) if r.default_when is not None and r.default_when(options)
                 and (r.providers is None or options.provider in r.providers) and r.missing() is None), None)


def reference_options(model: str | Path, options: RunOptions) -> RunOptions:
    """`options` for running `model` as the reference (compare's side A): a runtime named in `options` that runs
    the model's kind stays; otherwise the installed reference runtime of its kind that runs it (onnxruntime for
    ONNX), else the kind's default (a checkpoint's TF network, an engine's TensorRT), without the requests that
    runtime does not take (a --precision meant for the runtime under test)."""
    artifact = read_artifact(Path(model))
    if options.runtime is not None and get_runtime(options.runtime).artifact == artifact.kind:
        return options
    options = replace(options, runtime=None)
    chosen = next((r for r in registered(artifact.kind) if r.reference and r.runs(artifact) and r.missing() is None
                   and (r.providers is None or options.provider in r.providers)), None)
    dropped = {name: None for name in options.requested() if name != "extra_outputs"  # asked of both sides
               and name not in (chosen.takes if chosen else choose_runtime(artifact, options).takes)}
    options = replace(options, **dropped)
    return replace(options, runtime=(chosen or choose_runtime(artifact, options)).name)


def _default_name(artifact: Artifact, options: RunOptions) -> str | None:
    try:
        return choose_runtime(artifact, options).name
    except BertrtError:
        return None


def under_test_options(model: str | Path, options: RunOptions) -> RunOptions:
    """`options` for running `model` as the model under test (compare's side B): a runtime named in `options`
    stays. With none, B runs on its kind's reference runtime, as A does, so that `compare A B` checks the graph and
    not a default runtime's reduced precision (OpenVINO's bf16) -- unless the options steer the choice elsewhere:
    a request the reference does not take (--precision: OpenVINO) or options that make another runtime the default
    (--buckets, --cuda-graph, --provider cuda: the bound onnxruntime runner). Then the default for them runs B, as
    in infer/squad/perf."""
    if options.runtime is not None:
        return options
    reference = reference_options(model, options)
    artifact = read_artifact(Path(model))
    dropped = replace(options, runtime=reference.runtime) != reference
    steered = _default_name(artifact, options) != _default_name(artifact, RunOptions())
    return options if dropped or steered else reference


def check_options(runtime: Runtime, artifact: Artifact, options: RunOptions) -> None:
    """Refuse, in one line, a request the runtime does not take, a precision it does not know, and whatever its
    own check refuses."""
    chosen = "" if options.runtime else " (the default for these options; choose another with --runtime)"
    for name in options.requested():
        if name not in runtime.takes:
            able = [r.name for r in registered(artifact.kind) if name in r.takes and r.runs(artifact)]
            raise BertrtError(f"{artifact.path}: the {runtime.name} runtime{chosen} does not take "
                              f"{_REQUEST_NAMES[name]} (runtimes that do: {', '.join(able) or 'none registered'})")
    if options.precision is not None and options.precision not in runtime.precisions:
        raise BertrtError(f"{artifact.path}: the {runtime.name} runtime takes --precision "
                          f"{', '.join(runtime.precisions)}, not {options.precision!r}")
    if runtime.check is not None:
        runtime.check(artifact, options)


def open_backend(model: str | Path, options: RunOptions | None = None, **fields) -> QABackend:
    """Open any QA artifact for inference with `options` (a RunOptions; keyword arguments build one, or replace
    fields of the one given). Checks that need no device happen here; device work happens on activation."""
    options = run_options(options, **fields)
    artifact = read_artifact(Path(model))
    runtime = choose_runtime(artifact, options)
    check_options(runtime, artifact, options)
    return runtime.open(artifact, options)
