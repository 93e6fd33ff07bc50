"""The model's tokenizer: a Hugging Face fast tokenizer (`tokenizer.json`: WordPiece, byte-level BPE, Unigram) or a
BERT `vocab.txt`, loaded with the `tokenizers` library, and the one place that says which tokenizer a model uses
(`tokenizer_for`): the tokenizer travels with the model in its ONNX metadata (`bertrt.tokenizer`, the tokenizer.json
text), in an engine's sidecar, or as files beside a Hugging Face export; `--vocab` still overrides.

A vocab.txt is lower-cased unless a tokenizer_config.json beside it says ``"do_lower_case": false`` (cased BERT);
a tokenizer.json carries its own normalizer, which is used as is.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
from tokenizers import Tokenizer
from tokenizers.implementations import BertWordPieceTokenizer
from tokenizers.models import WordPiece

from bertrt.errors import BertrtError
from bertrt.inputs import LIMITS, read_text

META_TOKENIZER = "bertrt.tokenizer"  # ONNX metadata key: the tokenizer.json text
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")  # looked for beside a model, in this order
MAX_TOKENIZER_BYTES = LIMITS["vocab"]  # an untrusted file; XLM-R's tokenizer.json is 17 MB
_WORDPIECE_SPECIALS = ("[UNK]", "[CLS]", "[SEP]")  # a BERT vocab.txt without them cannot tokenize every text


def _count_vocab_lines(path: Path) -> int:
    # Count lines the way the WordPiece loader reads them (split on "\n" only): str.splitlines would also
    # split on U+2028 and friends, which can appear inside vocab entries.
    text = read_text(path, LIMITS["vocab"], "vocab file")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return len(lines)


def _do_lower_case(directory: Path) -> bool | None:
    """tokenizer_config.json's do_lower_case beside a vocab.txt, if it says."""
    config = directory / "tokenizer_config.json"
    if not config.is_file():
        return None
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get("do_lower_case")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, bool) else None


def _check_size(tokenizer: Tokenizer, source: str, expected_vocab_size: int | None, exact: bool = True) -> Tokenizer:
    """A vocab.txt must have exactly the model's rows; a tokenizer.json may have fewer (models often pad their
    embedding table, e.g. to a multiple of 8), never more: its ids must index the table."""
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    if expected_vocab_size is not None and (size > expected_vocab_size or (exact and size != expected_vocab_size)):
        raise BertrtError(f"{source} has {size} tokens but the model expects {expected_vocab_size}")
    return tokenizer


def _from_vocab_txt(path: Path, lowercase: bool | None, expected_vocab_size: int | None) -> Tokenizer:
    try:
        n_lines = _count_vocab_lines(path)
    except UnicodeDecodeError as e:
        raise BertrtError(f"vocab file {path} is not UTF-8 ({e.reason} at byte {e.start})") from e
    if n_lines == 0:
        raise BertrtError(f"vocab file {path} is empty")
    if lowercase is None:
        lowercase = _do_lower_case(path.parent)
    try:
        # Read the vocab ourselves: handing BertWordPieceTokenizer a path uses a deprecated WordPiece constructor.
        wrapper = BertWordPieceTokenizer(WordPiece.read_file(str(path)), lowercase=lowercase is not False)
    except Exception as e:  # the Rust side raises plain Exception/TypeError, e.g. when [SEP] is missing
        raise BertrtError(f"vocab file {path} cannot be loaded as a WordPiece vocab: {str(e).splitlines()[0]}") from e
    tokenizer = wrapper._tokenizer  # the plain Tokenizer: one type for every form (and it serialises)
    missing = [t for t in _WORDPIECE_SPECIALS if tokenizer.token_to_id(t) is None]
    if missing:  # without [UNK] every unknown word would fail at tokenization time, request by request
        raise BertrtError(f"vocab file {path} has no {', '.join(missing)} token (a BERT WordPiece vocab has "
                          f"{', '.join(_WORDPIECE_SPECIALS)})")
    size = tokenizer.get_vocab_size()
    if size != n_lines:
        raise BertrtError(
            f"vocab file {path} has {n_lines} lines but the tokenizer built from it has {size} tokens "
            "(duplicate or blank lines?)"
        )
    return _check_size(tokenizer, f"vocab file {path}", expected_vocab_size)


def tokenizer_from_json(text: str, source: str, expected_vocab_size: int | None = None) -> Tokenizer:
    """A tokenizer from tokenizer.json text (a file's, or a model's metadata)."""
    try:
        tokenizer = Tokenizer.from_str(text)
    except Exception as e:  # the Rust side raises plain Exception for malformed JSON or unknown components
        raise BertrtError(f"{source}: not a Hugging Face tokenizer.json ({str(e).splitlines()[0][:200]})") from None
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return _check_size(tokenizer, source, expected_vocab_size, exact=False)


def load_tokenizer(path: str | Path, lowercase: bool | None = None,
                   expected_vocab_size: int | None = None) -> Tokenizer:
    """The tokenizer in `path`: a tokenizer.json, a vocab.txt (one WordPiece token per line), or a folder holding
    one of them (tokenizer.json first). `lowercase` applies to a vocab.txt only (None: tokenizer_config.json's
    do_lower_case beside it, else lower-case).

    Raises BertrtError when the file is missing or empty, when a vocab.txt's tokenizer is smaller than the file
    (duplicate lines collapse silently, shifting every later id), or when the vocabulary differs from
    `expected_vocab_size` (e.g. the model config's vocab_size).
    """
    path = Path(path)
    if path.is_dir():
        found = [path / name for name in TOKENIZER_FILES if (path / name).is_file()]
        if not found:
            raise BertrtError(f"{path}: no {' or '.join(TOKENIZER_FILES)} in this folder")
        path = found[0]
    if not path.exists():
        raise BertrtError(f"vocab file {path} does not exist")
    # A FIFO or device that exists goes on to the bounded reader, which refuses it as "not a regular file".
    if path.suffix == ".json":
        text = read_text(path, MAX_TOKENIZER_BYTES, "tokenizer file")
        return tokenizer_from_json(text, str(path), expected_vocab_size)
    return _from_vocab_txt(path, lowercase, expected_vocab_size)


def tokenizer_json(tokenizer: Tokenizer) -> str:
    """The tokenizer as tokenizer.json text: what travels in a model's metadata and sidecars."""
    return getattr(tokenizer, "_tokenizer", tokenizer).to_str()


def sibling_tokenizer(model_path: str | Path) -> Path | None:
    """tokenizer.json or vocab.txt beside a model file (a Hugging Face export folder) or inside a checkpoint
    folder, if there is one."""
    directory = Path(model_path) if Path(model_path).is_dir() else Path(model_path).parent
    return next((directory / n for n in TOKENIZER_FILES if (directory / n).is_file()), None)


def tokenizer_for(model: str | Path | dict, override: str | Path | None = None,
                  expected_vocab_size: int | None = None, fallback: str | Path | None = None) -> Tokenizer:
    """The tokenizer to use with `model`: `override` (--vocab) when given; else the one that travels with the
    model: `model` is the metadata dict of an ONNX model or engine sidecar (key `bertrt.tokenizer`), or a path
    (an ONNX file's metadata, an engine's sidecar, then tokenizer.json / vocab.txt beside it); else `fallback`
    (a pipeline config's vocab, for models made before the tokenizer travelled)."""
    if override is not None:
        return load_tokenizer(override, expected_vocab_size=expected_vocab_size)
    if isinstance(model, dict):
        text, where = model.get(META_TOKENIZER), "the model's metadata"
    else:
        text, where = _travelling_tokenizer(Path(model)), str(model)
    if text:
        return tokenizer_from_json(text, f"{where}: {META_TOKENIZER}", expected_vocab_size)
    sibling = sibling_tokenizer(model) if not isinstance(model, dict) else None
    if sibling is not None:
        return load_tokenizer(sibling, expected_vocab_size=expected_vocab_size)
    if fallback is not None:
        return load_tokenizer(fallback, expected_vocab_size=expected_vocab_size)
    raise BertrtError(f"{where}: no tokenizer travels with this model (made before bertrt stored it, or from a "
                      "file without one): give --vocab (a vocab.txt or tokenizer.json)")


def _travelling_tokenizer(path: Path) -> str | None:
    """The tokenizer.json text stored with a model file: ONNX metadata, or an engine's sidecar record."""
    if path.suffix == ".onnx" and path.is_file():
        try:
            model = onnx.load(str(path), load_external_data=False)
        except Exception:  # not ONNX: the runtime that opens it says so
            return None
        return next((p.value for p in model.metadata_props if p.key == META_TOKENIZER), None)
    record = Path(f"{path}.json")  # the sidecar of an engine or any artifact (bertrt.artifacts.sidecar_path)
    if record.is_file():
        try:
            value = json.loads(record.read_text(encoding="utf-8")).get("tokenizer")
        except (OSError, ValueError, AttributeError):
            return None
        return value if isinstance(value, str) else None
    return None


def travelling_tokenizer(model_path: str | Path) -> str | None:
    """The tokenizer.json text a stage stores with the artifact it makes from `model_path`: the one that travels
    with it already, else tokenizer.json / vocab.txt beside it (a Hugging Face export folder); None without."""
    text = _travelling_tokenizer(Path(model_path))
    if text:
        return text
    sibling = sibling_tokenizer(model_path)
    return tokenizer_json(load_tokenizer(sibling)) if sibling is not None else None
