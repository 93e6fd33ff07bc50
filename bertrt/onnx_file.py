"""Reading an ONNX file that may store its weights as external data, without letting the file name what is read.

An ONNX tensor can keep its bytes in another file (`location`, relative to the model's directory). onnx refuses an
absolute or `..` location, but follows a symbolic link and opens FIFOs and devices: `weights.bin -> /etc/shadow`
would copy that file's bytes into every artifact made from the model, a FIFO would hang the load. Every ONNX file
bertrt reads (directly, or by handing its path to onnxruntime, TensorRT's parser or onnxruntime's quantizer) goes
through `load_onnx` or `check_external_data` first: each external file must be a regular file inside the model's
directory, reached without a symbolic link (hard links are files of the directory like any other).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import onnx
from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors, uses_external_data

from bertrt.errors import BertrtError
from bertrt.messages import shown


def _refuse(path: Path, tensor: str, location: str, why: str) -> BertrtError:
    return BertrtError(f"{shown(path)}: external data {shown(location)!s} of tensor {shown(tensor, 60)} {why}; "
                       f"bertrt reads external data only from regular files inside the model's directory")


def _check_location(path: Path, tensor: str, location: str) -> None:
    base = path.parent
    if not location or os.path.isabs(location) or "\0" in location:
        raise _refuse(path, tensor, location, "is not a relative file name")
    parts = Path(location).parts
    if ".." in parts:
        raise _refuse(path, tensor, location, "leaves the model's directory")
    current = base
    for part in parts:  # no link anywhere below the model's directory
        current = current / part
        try:
            st = os.lstat(current)
        except OSError as exc:
            raise _refuse(path, tensor, location, f"cannot be read ({exc.strerror})") from None
        if stat.S_ISLNK(st.st_mode):
            raise _refuse(path, tensor, location, "is (or goes through) a symbolic link")
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(path, tensor, location, "is not a regular file")
    resolved, root = current.resolve(), base.resolve()
    if not resolved.is_relative_to(root):
        raise _refuse(path, tensor, location, "leaves the model's directory")


def check_external_data(model: onnx.ModelProto, path: str | os.PathLike[str]) -> None:
    """Refuse (one line) any external-data file of `model` (loaded from `path`, without its external data) that is
    not a regular file inside the model's directory, reached without symbolic links."""
    checked: set[str] = set()
    for tensor in _get_all_tensors(model):
        if not uses_external_data(tensor):
            continue
        location = ExternalDataInfo(tensor).location
        if location not in checked:
            _check_location(Path(path), tensor.name, location)
            checked.add(location)


def load_onnx(path: str | os.PathLike[str], load_weights: bool = True) -> onnx.ModelProto:
    """onnx.load, with the model's external data (if any) checked before any of it is opened. Raises BertrtError
    for a file that is not ONNX."""
    path = Path(path)
    if not path.is_file():
        raise BertrtError(f"{shown(path)}: model file not found (or not a regular file)")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, RuntimeWarning or ValueError for non-ONNX bytes
        raise BertrtError(f"{shown(path)}: not an ONNX file ({type(exc).__name__})") from None
    check_external_data(model, path)
    if load_weights:
        try:
            onnx.load_external_data_for_model(model, str(path.parent))
        except (OSError, ValueError) as exc:
            raise BertrtError(f"{shown(path)}: cannot read its external data ({shown(exc, 200)})") from None
    return model


def check_onnx_file(path: str | os.PathLike[str]) -> None:
    """For a path handed to another reader (onnxruntime, TensorRT's parser): its external data is safe to read."""
    load_onnx(path, load_weights=False)
