"""The WordPiece tokenizer for a BERT vocab file, checked against the file it was built from."""

from __future__ import annotations

from pathlib import Path

from tokenizers import BertWordPieceTokenizer
from tokenizers.models import WordPiece

from bertrt.errors import BertrtError
from bertrt.inputs import LIMITS, read_text


_SPECIAL_TOKENS = ("[UNK]", "[CLS]", "[SEP]")


def _count_vocab_lines(path: Path) -> int:
    # Count lines the way the WordPiece loader reads them (split on "\n" only): str.splitlines would also
    # split on U+2028 and friends, which can appear inside vocab entries.
    text = read_text(path, LIMITS["vocab"], "vocab file")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return len(lines)


def load_tokenizer(
    vocab_path: str | Path, lowercase: bool = True, expected_vocab_size: int | None = None
) -> BertWordPieceTokenizer:
    """Build a BERT WordPiece tokenizer from `vocab_path` (one token per line).

    Raises BertrtError when the file is missing or empty, when the tokenizer's vocabulary is smaller than the
    file (duplicate lines collapse silently, shifting every later id), or when it differs from
    `expected_vocab_size` (e.g. the model config's vocab_size).
    """
    path = Path(vocab_path)
    if not path.exists():
        raise BertrtError(f"vocab file {path} does not exist")
    try:
        n_lines = _count_vocab_lines(path)
    except UnicodeDecodeError as e:
        raise BertrtError(f"vocab file {path} is not UTF-8 ({e.reason} at byte {e.start})") from e
    if n_lines == 0:
        raise BertrtError(f"vocab file {path} is empty")
    try:
        # Read the vocab ourselves: handing BertWordPieceTokenizer a path uses a deprecated WordPiece constructor.
        tokenizer = BertWordPieceTokenizer(WordPiece.read_file(str(path)), lowercase=lowercase)
    except Exception as e:  # the Rust side raises plain Exception/TypeError, e.g. when [SEP] is missing
        raise BertrtError(f"vocab file {path} cannot be loaded as a WordPiece vocab: {str(e).splitlines()[0]}") from e
    missing = [t for t in _SPECIAL_TOKENS if tokenizer.token_to_id(t) is None]
    if missing:  # without [UNK] every unknown word would fail at tokenization time, request by request
        raise BertrtError(f"vocab file {path} has no {', '.join(missing)} token (a BERT WordPiece vocab has "
                          f"{', '.join(_SPECIAL_TOKENS)})")
    size = tokenizer.get_vocab_size()
    if size != n_lines:
        raise BertrtError(
            f"vocab file {path} has {n_lines} lines but the tokenizer built from it has {size} tokens "
            "(duplicate or blank lines?)"
        )
    if expected_vocab_size is not None and size != expected_vocab_size:
        raise BertrtError(f"vocab file {path} has {size} tokens but the model expects {expected_vocab_size}")
    return tokenizer
