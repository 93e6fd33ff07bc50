"""What a target is: the frozen `Target` value each module of this package declares, and its surgery `Option`s.

Why a value and not a class per target: every stage only asks questions (which runtimes, which precisions, which
options, why not), so the answers are data plus a few methods that phrase the one-line refusals. A target module
builds one `Target` and the registry (`__init__.py`) lists it.

Direction of "who runs what": the target declares its runtimes (`runtimes`, a frozenset of runtime names), and a
plain-ONNX target (export, native) declares none: every runtime runs it, so a new runtime (OpenVINO) needs no edit
here; one that runs a foreign-op form too is one word added in that target's module. `Target.runs_on(name)` answers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import onnx

from bertrt.errors import BertrtError

# emit(graph, matches, cfg, **options) -> {block: fused count}; rewrites an onnx-graphsurgeon graph in place.
Emitter = Callable[..., dict[str, int]]
# A whole-model conversion from the `source` target's graph (packed: onnxruntime's packing mode).
Converter = Callable[[onnx.ModelProto], onnx.ModelProto]
Recognizer = Callable[[onnx.ModelProto], bool]


@dataclass(frozen=True)
class Option:
    """One surgery option of a target: a keyword of its emitter, a CLI flag, a key of the surgery sidecar."""
    name: str
    choices: tuple[str, ...]
    default: str
    help: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class Target:
    name: str  # in model metadata (`bertrt.target`), sidecars, engine records and on the command line
    description: str
    # Runtime names that run the graph (bertrt.runtimes names, and the TensorRT parsers `tensorrt`, `tensorrt-rtx`);
    # None: plain ONNX, which every runtime runs.
    runtimes: frozenset[str] | None
    precisions: tuple[str, ...] = ()  # what `bertrt quantize` makes of it (fp16, int8, fp8)
    precision_refusal: str = ""  # why the other precisions are refused (ends the one-line refusal)
    emit: Emitter | None = None  # `bertrt surgery` makes it from an unfused export with this (None: it does not)
    options: tuple[Option, ...] = ()  # the emitter's options, validated by `resolve_options` only
    convert: Converter | None = None  # or it is converted from another target's graph ...
    source: str | None = None  # ... this one (the packed form is made from `ort`)
    op_domain: str | None = None  # domain of the ops a runtime must provide (named in refusals)
    recognize: Recognizer | None = None  # tells the form by its ops, for models without a recorded target
    runtime_refusal: str = ""  # why a runtime not listed cannot run it; may use {runtime} and {ops}
    fixed_seq: bool = False  # engines need one sequence length per profile (the fixed-length BERT plugins)
    providers: frozenset[str] | None = None  # onnxruntime execution providers that run it (None: all)
    provider_refusal: str = ""

    # --- runtimes -------------------------------------------------------------------------------------------------
    def runs_on(self, runtime: str) -> bool:
        """Whether the named runtime runs a graph of this target (asked by the runtime registry and the build)."""
        return self.runtimes is None or runtime in self.runtimes

    def foreign_ops(self, model: onnx.ModelProto) -> list[str]:
        """The distinct op types of this target's domain in `model` (what a runtime would have to provide)."""
        if self.op_domain is None:
            return []
        return sorted({n.op_type for n in model.graph.node if n.domain == self.op_domain})

    def check_runs_on(self, runtime: str, where: str, model: onnx.ModelProto | None = None,
                      label: str | None = None) -> None:
        """Refuse, in one line starting with `where`, a runtime that cannot run this graph (naming the ops of
        `model` it lacks; `label` is how the runtime is named to the user)."""
        if self.runs_on(runtime):
            return
        raise BertrtError(f"{where}: {self.why_not(runtime, model, label)}")

    def why_not(self, runtime: str, model: onnx.ModelProto | None = None, label: str | None = None) -> str:
        """Why a runtime this graph does not run on cannot run it: the ops of `model` it lacks, and what to build
        instead where the target says (its `runtime_refusal`)."""
        ops = ", ".join(self.foreign_ops(model) if model is not None else []) or self.description
        why = self.runtime_refusal or (f"the `{self.name}` target ({{ops}}) does not run on {{runtime}}; it runs on "
                                       f"{', '.join(sorted(self.runtimes or ()))}")
        return why.format(runtime=label or runtime, ops=ops)

    def check_provider(self, provider: str, where: str) -> None:
        """Refuse, in one line starting with `where`, an onnxruntime execution provider that cannot run this graph."""
        if self.providers is None or provider in self.providers:
            return
        providers = "/".join(sorted(self.providers))
        why = self.provider_refusal or f"the `{self.name}` target runs only on onnxruntime's {providers} provider"
        raise BertrtError(f"{where}: {why}")

    def check_convertible(self, model_target: Target, where: str) -> None:
        """Refuse, in one line, converting a graph of `model_target` into this (converted) target."""
        if model_target is self:
            raise BertrtError(f"{where}: the model is already in {self.description}")
        if model_target.name != self.source:
            raise BertrtError(f"{where}: the `{self.name}` target needs the `{self.source}` target, not "
                              f"`{model_target.name}`; run `bertrt surgery --target {self.source}` first")

    # --- precisions -----------------------------------------------------------------------------------------------
    def supports_precision(self, precision: str) -> bool:
        return precision in self.precisions

    def check_precision(self, precision: str) -> None:
        """Refuse, in one line, a precision `bertrt quantize` does not make of this target."""
        if self.supports_precision(precision):
            return
        supported = f" (supported: {', '.join(self.precisions)})" if self.precisions else ""
        why = f": {self.precision_refusal}" if self.precision_refusal else ""
        raise BertrtError(f"precision {precision} is not supported for the {self.name} target{supported}{why}")

    # --- surgery --------------------------------------------------------------------------------------------------
    @property
    def is_surgery(self) -> bool:
        return self.emit is not None

    def resolve_options(self, given: Mapping[str, str]) -> dict[str, str]:
        """Every option of this target, `given` ones checked against their choices, the rest at their default; an
        option this target does not take is refused. The one place options are validated."""
        known = {o.name: o for o in self.options}
        foreign = sorted(set(given) - set(known))
        if foreign:
            takes = f"takes only {', '.join(known)}" if known else "takes no options"
            raise BertrtError(f"the {self.name} target {takes}, not {', '.join(foreign)}")
        resolved = {}
        for option in self.options:
            value = given.get(option.name, option.default)
            if value not in option.choices:
                raise BertrtError(f"{option.flag} ({self.name} target) must be one of {', '.join(option.choices)}, "
                                  f"not {value!r}")
            resolved[option.name] = value
        return resolved
