"""Optimization profiles for the three QA inputs: min/opt/max of batch and of sequence length.

Spelling (flag `--profile`, several allowed; config `build.profiles`, a list of the same strings):
`batch=1:8:8,seq=128:384:384` (min:opt:max); `batch=1:8` means min 1, opt = max = 8; `seq=384` fixes a
dimension. The default is one profile from the config: batch 1..run.batch_size (opt the maximum), sequence fixed
at squad.max_seq_length — fixed S, as NVIDIA's demo built it (its fused attention kernels need a fixed S, and
SQuAD pads every window to it).
"""

from __future__ import annotations

from dataclasses import dataclass

from bertrt.errors import BertrtError
from bertrt.messages import shown
from bertrt.model_config import BertConfig

Range = tuple[int, int, int]  # (min, opt, max)


@dataclass(frozen=True)
class QAProfile:
    batch: Range
    seq: Range

    def __str__(self) -> str:
        return f"batch={':'.join(map(str, self.batch))},seq={':'.join(map(str, self.seq))}"

    @property
    def fixed_seq(self) -> int | None:
        return self.seq[0] if self.seq[0] == self.seq[2] else None

    def covers(self, batch: int, seq: int) -> bool:
        return self.batch[0] <= batch <= self.batch[2] and self.seq[0] <= seq <= self.seq[2]

    def to_dict(self) -> dict:
        return {"batch": list(self.batch), "seq": list(self.seq)}

    @classmethod
    def from_dict(cls, data, source: str) -> QAProfile:
        """From a sidecar (untrusted): two lists of three positive integers, min <= opt <= max."""
        if not isinstance(data, dict) or set(data) != {"batch", "seq"}:
            raise BertrtError(f"{source}: a profile must be an object with 'batch' and 'seq'")
        ranges = []
        for key in ("batch", "seq"):
            value = data[key]
            if not (isinstance(value, list) and len(value) == 3
                    and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
                raise BertrtError(f"{source}: profile {key} must be [min, opt, max] integers, not {value!r}")
            ranges.append(_checked(tuple(value), key, source))
        return cls(*ranges)


def _checked(values: tuple[int, ...], name: str, source: str) -> Range:
    lo, opt, hi = values
    if lo < 1:
        raise BertrtError(f"{source}: {name} minimum must be at least 1, got {lo}")
    if not lo <= opt <= hi:
        raise BertrtError(f"{source}: {name} must satisfy min <= opt <= max, got {lo}:{opt}:{hi}")
    return lo, opt, hi


def _range(text: str, name: str, spec: str) -> Range:
    try:
        values = [int(v) for v in text.split(":")]
    except ValueError:
        raise BertrtError(f"profile {spec!r}: {name} must be integers MIN:OPT:MAX, not {text!r}") from None
    if len(values) == 1:
        values = values * 3
    elif len(values) == 2:
        values = [values[0], values[1], values[1]]
    elif len(values) != 3:
        raise BertrtError(f"profile {spec!r}: {name} takes one to three values MIN:OPT:MAX, not {text!r}")
    return _checked(tuple(values), name, f"profile {spec!r}")


def parse_profile(spec: str) -> QAProfile:
    if not isinstance(spec, str):
        raise BertrtError(f"a profile must be a string like 'batch=1:8:8,seq=384', not {spec!r}")
    pairs = [part.split("=", 1) if "=" in part else (part, "") for part in spec.replace(" ", "").split(",")]
    parts = dict(pairs)
    if len(parts) != len(pairs):  # `batch=1:8,batch=2:4,seq=384` must not silently mean the last one
        repeated = sorted({key for key, _ in pairs if [k for k, _ in pairs].count(key) > 1})
        raise BertrtError(f"profile {shown(spec)}: {', '.join(repeated)} given more than once")
    if set(parts) != {"batch", "seq"}:
        raise BertrtError(f"profile {spec!r}: expected 'batch=MIN:OPT:MAX,seq=MIN:OPT:MAX'")
    return QAProfile(_range(parts["batch"], "batch", spec), _range(parts["seq"], "seq", spec))


def default_profile(batch_size: int, seq_len: int) -> QAProfile:
    return QAProfile((1, batch_size, batch_size), (seq_len, seq_len, seq_len))


def check_profiles(profiles: list[QAProfile], cfg: BertConfig, fixed_seq: bool, source: str) -> None:
    """What the model can take: no sequence longer than its position table; one S per profile for targets whose
    kernels need it (the fixed-length BERT plugins)."""
    if not profiles:
        raise BertrtError("no optimization profile given")
    for profile in profiles:
        if profile.seq[2] > cfg.max_position_embeddings:
            raise BertrtError(f"profile {profile}: sequence length {profile.seq[2]} exceeds the model's "
                              f"{cfg.max_position_embeddings} positions ({source})")
        if fixed_seq and profile.fixed_seq is None:
            raise BertrtError(f"profile {profile}: the {source} needs a fixed sequence length per profile (the BERT "
                              f"plugins are fixed-length); use seq=S, one profile per S")


def covering_profile(profiles: tuple[QAProfile, ...], batch: int, seq: int) -> int:
    """Index of the first profile that takes a [batch, seq] input; a one-line error naming them otherwise."""
    for index, profile in enumerate(profiles):
        if profile.covers(batch, seq):
            return index
    raise BertrtError(f"input shape [batch {batch}, seq {seq}] is outside the engine's profiles "
                      f"({'; '.join(map(str, profiles))}); rebuild with a --profile that covers it")
