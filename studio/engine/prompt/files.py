"""Model files read safely: the format comes from the bytes, pickles only with consent.

- :func:`sniff_format` tells safetensors, a torch zip checkpoint, a bare pickle and anything else
  apart by content; the extension is never trusted (a pickle renamed ``.safetensors`` is a pickle).
- :func:`read_safetensors_header` validates the header before anything is allocated: its length
  against the file size, every tensor's dtype, shape and byte range; a truncated file or a hostile
  header fails fast with a message, without reading the tensors.
- :func:`read_state_dict` loads safetensors directly; a pickle only with ``allow_pickle`` (the
  user's consent), then only through ``torch.load(weights_only=True)``. If that refuses the file,
  the file is refused: it is never retried with full unpickling.
- :func:`check_folder_code` refuses a diffusers folder that ships or names code to run.
"""

from __future__ import annotations

import enum
import json
import math
import os
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studio.engine.prompt.file_errors import (  # re-exported: they were defined here
    CorruptModelFile,
    ModelFileError,
    PickleConsentRequired,
    UnsafeModelError,
    open_regular,
)

if TYPE_CHECKING:
    import torch

MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit
MAX_TENSORS = 50_000  # 20 times an SDXL checkpoint (~2,500); parsing more takes seconds and GBs
MIN_PICKLE_TORCH = (2, 6)  # weights_only in older torch could be made to run code
_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}  # fmt: skip
FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})
_REPAIR = "re-download or re-export it"


class FileFormat(str, enum.Enum):
    SAFETENSORS = "safetensors"
    TORCH_ZIP = "torch-zip"  # torch.save since 1.6: a zip with <name>/data.pkl
    PICKLE = "pickle"  # a bare pickle stream (legacy torch.save, .bin, .pkl)
    UNKNOWN = "unknown"

    @property
    def is_pickle(self) -> bool:
        return self in (FileFormat.TORCH_ZIP, FileFormat.PICKLE)


# -- sniffing ---------------------------------------------------------------------------------


def sniff_format(path: str | os.PathLike[str]) -> FileFormat:
    """The file's format from its first bytes (and, for a zip, its member names)."""
    path = Path(path)
    if path.is_dir():
        return FileFormat.UNKNOWN
    try:
        with open_regular(path) as fh:
            head = fh.read(16)
    except OSError as err:
        raise ModelFileError(f"Cannot read {path.name}: {err.strerror or err}.", path) from err
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return FileFormat.UNKNOWN
        return (
            FileFormat.TORCH_ZIP
            if any(n.endswith("data.pkl") for n in names)
            else FileFormat.UNKNOWN
        )
    if head[:1] == b"\x80" and len(head) >= 2 and 2 <= head[1] <= 5:
        return FileFormat.PICKLE
    if len(head) >= 9 and head[8:9] == b"{":
        # an 8-byte length, then JSON; whether the length fits the file is
        # read_safetensors_header's business, so a truncated file is named as truncated
        return FileFormat.SAFETENSORS
    return FileFormat.UNKNOWN


# -- safetensors ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


@dataclass(frozen=True)
class SafetensorsHeader:
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_bytes: int

    def dtypes(self) -> set[str]:
        return {t.dtype for t in self.tensors.values()}


def _corrupt(path: Path, why: str) -> CorruptModelFile:
    return CorruptModelFile(f"{path.name} is truncated or corrupt: {why}; {_REPAIR}.", path)


def read_safetensors_header(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """Read and validate a safetensors header without reading any tensor data."""
    path = Path(path)
    try:
        with open_regular(path) as fh:
            size = os.fstat(fh.fileno()).st_size
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise _corrupt(path, f"the file is only {size} bytes")
            (n,) = struct.unpack("<Q", prefix)
            if n > MAX_HEADER_BYTES:
                raise _corrupt(
                    path,
                    f"its header claims {n:,} bytes, more than the {MAX_HEADER_BYTES:,} the "
                    "safetensors format allows",
                )
            if n > size - 8:
                raise _corrupt(
                    path, f"its header claims {n:,} bytes but the file holds {size - 8:,}"
                )
            raw = fh.read(n)
    except OSError as err:
        raise ModelFileError(f"Cannot read {path.name}: {err.strerror or err}.", path) from err
    # Counted before parsing, as objects (each tensor is one, however its keys are spelled):
    # a header of 100 MB can describe millions of tensors.
    if raw.count(b"{") > MAX_TENSORS + 2:
        raise _corrupt(path, f"its header lists more than {MAX_TENSORS:,} tensors")
    try:
        header = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise _corrupt(path, "its header nests too deeply to be a table of tensors") from None
    except (UnicodeDecodeError, ValueError):
        raise _corrupt(path, "its header is not valid JSON") from None
    if not isinstance(header, dict):
        raise _corrupt(path, "its header is not a table of tensors")
    metadata = header.pop("__metadata__", None) or {}
    if len(header) > MAX_TENSORS:
        raise _corrupt(path, f"its header lists more than {MAX_TENSORS:,} tensors")
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _corrupt(path, "its metadata is not a table of strings")
    data_bytes = size - 8 - n
    tensors: dict[str, TensorInfo] = {}
    for name, spec in header.items():
        tensors[name] = _tensor_info(path, name, spec)
    end = 0
    for name, info in sorted(tensors.items(), key=lambda kv: (kv[1].start, kv[1].end)):
        if info.start != end:
            why = "overlaps another tensor" if info.start < end else "leaves a gap before it"
            raise _corrupt(path, f"tensor {name!r} {why}")
        end = info.end
    if end > data_bytes:
        raise _corrupt(
            path, f"its tensors need {end:,} bytes of data but the file holds {data_bytes:,}"
        )
    if end < data_bytes:
        raise _corrupt(path, f"{data_bytes - end:,} bytes follow the last tensor")
    return SafetensorsHeader(tensors, {str(k): str(v) for k, v in metadata.items()}, data_bytes)


def _tensor_info(path: Path, name: str, spec: Any) -> TensorInfo:
    if not isinstance(spec, dict):
        raise _corrupt(path, f"the entry for {name!r} is not a tensor description")
    dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if dtype not in _DTYPE_BYTES:
        raise _corrupt(path, f"tensor {name!r} has an unknown dtype {dtype!r}")
    ok_shape = isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)
    ok_offsets = (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(o, int) and o >= 0 for o in offsets)
        and offsets[0] <= offsets[1]
    )
    if not (ok_shape and ok_offsets):
        raise _corrupt(path, f"tensor {name!r} has a malformed shape or byte range")
    if math.prod(shape) * _DTYPE_BYTES[dtype] != offsets[1] - offsets[0]:
        raise _corrupt(path, f"tensor {name!r} has a byte range that does not match its shape")
    return TensorInfo(dtype, tuple(shape), offsets[0], offsets[1])


# -- state dicts ------------------------------------------------------------------------------


def read_state_dict(
    path: str | os.PathLike[str], *, allow_pickle: bool = False
) -> dict[str, torch.Tensor]:
    """The tensors in a single-file checkpoint, on the CPU.

    Safetensors load directly. A pickled checkpoint raises :class:`PickleConsentRequired` unless
    ``allow_pickle``; with it, it is read by ``torch.load(weights_only=True)`` (memory-mapped
    when it is a zip) and a file that needs anything beyond tensors is refused with
    :class:`UnsafeModelError`. A ``state_dict`` wrapper (original SD checkpoints) is unwrapped
    and non-tensor entries (step counters) are dropped.
    """
    path = Path(path)
    fmt = sniff_format(path)
    if fmt is FileFormat.SAFETENSORS:
        read_safetensors_header(path)  # clear messages for truncated or hostile files
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except (SafetensorError, OSError) as err:
            raise _corrupt(path, str(err)) from err
    if fmt.is_pickle:
        if not allow_pickle:
            raise PickleConsentRequired(path)
        return _weights_only_load(path, fmt)
    if path.suffix.lower() == ".safetensors":
        raise _corrupt(path, "it does not start with a safetensors header")
    raise ModelFileError(
        f"{path.name} is not a model file Studio can read: it is neither safetensors nor a "
        "PyTorch checkpoint (whatever its extension says).",
        path,
    )


def require_safe_torch() -> None:
    """Refuse to read any pickle on a torch whose weights-only mode can be tricked into running
    code (before 2.6); Studio never reads a pickle any other way."""
    import torch

    found = tuple(int(p) for p in re.findall(r"\d+", torch.__version__)[:2])
    if found < MIN_PICKLE_TORCH:
        need = ".".join(map(str, MIN_PICKLE_TORCH))
        raise UnsafeModelError(
            f"Studio reads pickled checkpoints only with PyTorch {need} or newer, because the "
            f"restricted weights-only mode of older versions can be made to run code; this is "
            f"PyTorch {torch.__version__}, so upgrade it or use a .safetensors version of the "
            "model."
        )


def _weights_only_load(path: Path, fmt: FileFormat) -> dict[str, torch.Tensor]:
    import pickle

    import torch

    require_safe_torch()

    # torch.load picks safetensors by a ".safetensors" name; a file object keeps it on content.
    by_name = path.suffix.lower() != ".safetensors"
    try:
        with open_regular(path) as fh:
            obj = torch.load(
                path if by_name else fh,
                map_location="cpu",
                weights_only=True,
                mmap=by_name and fmt is FileFormat.TORCH_ZIP,
            )
    except pickle.UnpicklingError as err:
        # weights_only refused something that is not a tensor: a class, a function call.
        # This is final: loading it any other way is exactly what an exploit needs.
        raise UnsafeModelError(
            f"{path.name} needs code to load, so Studio refuses it: restricted weights-only "
            f"loading found {_refused_global(err)} in it, not just tensors. Use a .safetensors "
            "version of this model.",
            path,
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as err:
        raise _corrupt(path, _first_line(err)) from err
    return _tensors_only(path, obj)


def _refused_global(err: BaseException) -> str:
    """What weights-only unpickling refused ("pathlib.Path.touch"), without torch's advice to
    load the file unsafely, which Studio never does."""
    match = re.search(
        r"(?:Unsupported global|Unsupported operand[^:]*):\s*(?:GLOBAL\s+)?([\w.]+)", str(err)
    )
    return f"a reference to {match.group(1)}" if match else "something other than tensors"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__


def _tensors_only(path: Path, obj: Any) -> dict[str, torch.Tensor]:
    import torch

    while isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    tensors = (
        {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if isinstance(obj, dict)
        else {}
    )
    if not tensors:
        raise ModelFileError(f"{path.name} holds no model weights (no named tensors found).", path)
    return tensors


def save_state_dict_safetensors(
    tensors: dict[str, torch.Tensor], path: str | os.PathLike[str]
) -> None:
    """Write ``tensors`` as safetensors, atomically. Tensors that share memory are copied apart."""
    from safetensors.torch import save_file

    from studio.core import atomic

    seen: set[tuple[int, int]] = set()
    out = {}
    for name, t in tensors.items():
        t = t.contiguous()
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        if key in seen or t.untyped_storage().nbytes() != t.numel() * t.element_size():
            t = t.clone()
        seen.add(key)
        out[name] = t
    with atomic.atomic_path(path) as tmp:
        save_file(out, str(tmp))


# -- folders ----------------------------------------------------------------------------------


def check_folder_code(folder: str | os.PathLike[str]) -> None:
    """Refuse a diffusers folder that ships code or asks for code to be run; see
    :mod:`studio.engine.prompt.folder_code` for what is checked."""
    from studio.engine.prompt.folder_code import check_folder_code as check

    check(folder)
