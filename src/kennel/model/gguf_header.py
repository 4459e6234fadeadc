"""Read a GGUF header (metadata and tensor infos) from any byte source, never the weights.

The `gguf` package's reader memory-maps a whole local file; a model on a hub or behind an https
URL must be sized from its first few megabytes only, so the header is parsed here from a source
that serves byte ranges (a local file or HTTP range requests, see ``sources.py``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Protocol

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from kennel.errors import NotGGUFError, TruncatedModelError, UnsupportedModelError

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
# Headers of real models stay under ~20 MiB (a 256k-token vocab with merges); a bound keeps a
# hostile or broken source from making us read without end.
MAX_HEADER_BYTES = 512 * 1024 * 1024
# Arrays longer than this are kept as a count only (token lists, merges, scores).
MAX_KEPT_ARRAY = 8192

_SCALAR_FORMATS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}


class ByteSource(Protocol):
    """Random access to the bytes of one file."""

    name: str

    def read_at(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset``; fewer only at the end of the file."""
        ...

    def total_size(self) -> int | None:
        """The file's size in bytes, when the source knows it."""
        ...


@dataclass(frozen=True)
class ArraySummary:
    """A long metadata array kept as its element type and length only."""

    element_type: str
    count: int


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the file; ``shape`` is in GGUF order (fastest-varying dimension first)."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    offset: int = 0

    @property
    def type_name(self) -> str:
        return ggml_type_name(self.ggml_type)

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.shape, self.ggml_type)


@dataclass(frozen=True)
class GGUFHeader:
    version: int
    metadata: dict[str, Any]
    tensors: tuple[TensorInfo, ...]
    data_offset: int
    header_bytes: int
    file_size: int | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    @property
    def tensor_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


def ggml_type_name(type_id: int) -> str:
    try:
        return GGMLQuantizationType(type_id).name
    except ValueError:
        return f"type{type_id}"


def tensor_nbytes(shape: tuple[int, ...], type_id: int) -> int:
    """Bytes of a tensor as ggml stores it: whole blocks along the first dimension."""
    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(type_id)]
    except (ValueError, KeyError):
        raise UnsupportedModelError(
            f"The file uses tensor type {type_id}, which this version of kennel does not know.",
            hint="Upgrade kennel (pip install -U kennel gguf).",
        ) from None
    if not shape:
        return type_size
    if shape[0] % block:
        raise UnsupportedModelError(
            f"A {ggml_type_name(type_id)} tensor has a row of {shape[0]} values, "
            f"not a multiple of its block size {block}.",
            hint="The file is damaged or was written by a broken tool; download it again.",
        )
    n_rows = 1
    for d in shape[1:]:
        n_rows *= d
    return shape[0] // block * type_size * n_rows


class _Cursor:
    """Sequential reads over a ByteSource, fetching larger chunks as the header grows."""

    def __init__(self, source: ByteSource, first_chunk: int) -> None:
        self._source = source
        self._buf = b""
        self._buf_start = 0
        self._chunk = first_chunk
        self.pos = 0

    def read(self, n: int) -> bytes:
        end = self.pos + n
        if end > MAX_HEADER_BYTES:
            raise TruncatedModelError(
                f"{self._source.name}: the GGUF header claims more than "
                f"{MAX_HEADER_BYTES // 2**20} MiB of metadata.",
                hint="The file is damaged or not a model; download it again.",
            )
        while end > self._buf_start + len(self._buf):
            self._fill(end)
        start = self.pos - self._buf_start
        self.pos = end
        return self._buf[start : start + n]

    def _fill(self, need_end: int) -> None:
        have_end = self._buf_start + len(self._buf)
        size = max(self._chunk, need_end - have_end)
        data = self._source.read_at(have_end, size)
        if not data:
            raise TruncatedModelError(
                f"{self._source.name}: the file ends after {have_end} bytes, inside its GGUF header.",
                hint="The download was cut short; download the file again.",
            )
        # Keep only what is not yet consumed, so long token arrays do not pile up in memory.
        keep_from = min(self.pos, have_end) - self._buf_start
        self._buf = self._buf[keep_from:] + data
        self._buf_start += keep_from
        self._chunk = min(self._chunk * 2, 64 * 1024 * 1024)

    def scalar(self, vtype: GGUFValueType) -> Any:
        fmt = _SCALAR_FORMATS[vtype]
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def u32(self) -> int:
        return int(struct.unpack("<I", self.read(4))[0])

    def u64(self) -> int:
        return int(struct.unpack("<Q", self.read(8))[0])

    def string(self) -> str:
        n = self.u64()
        if n > 64 * 1024 * 1024:
            raise TruncatedModelError(
                f"{self._source.name}: a GGUF string claims {n} bytes; the header is corrupt.",
                hint="Download the file again.",
            )
        return self.read(n).decode("utf-8", errors="replace")

    def skip(self, n: int) -> None:
        self.read(n)


def _value_type(raw: int, source: str) -> GGUFValueType:
    try:
        return GGUFValueType(raw)
    except ValueError:
        raise TruncatedModelError(
            f"{source}: unknown GGUF metadata type {raw}; the header is corrupt.",
            hint="Download the file again.",
        ) from None


def _read_value(cur: _Cursor, vtype: GGUFValueType, source: str) -> Any:
    if vtype == GGUFValueType.STRING:
        return cur.string()
    if vtype != GGUFValueType.ARRAY:
        return cur.scalar(vtype)
    etype = _value_type(cur.u32(), source)
    count = cur.u64()
    if count <= MAX_KEPT_ARRAY:
        return [_read_value(cur, etype, source) for _ in range(count)]
    if etype == GGUFValueType.STRING:
        for _ in range(count):
            cur.skip(cur.u64())
    elif etype == GGUFValueType.ARRAY:
        for _ in range(count):
            _read_value(cur, etype, source)
    else:
        cur.skip(count * struct.calcsize(_SCALAR_FORMATS[etype]))
    return ArraySummary(etype.name, count)


def read_header(source: ByteSource, *, first_chunk: int = 1024 * 1024) -> GGUFHeader:
    """Parse the GGUF header of ``source`` and check the tensors fit in the file."""
    magic = source.read_at(0, 4)
    if magic != GGUF_MAGIC:
        raise NotGGUFError(
            f"{source.name} is not a GGUF file (it starts with {_describe_magic(magic)}).",
            hint="kennel needs a .gguf model file; for safetensors models pass the Hugging Face repo id.",
        )
    cur = _Cursor(source, first_chunk)
    cur.skip(4)
    version = cur.u32()
    if version not in (2, 3):
        raise UnsupportedModelError(
            f"{source.name} is GGUF version {version}; kennel reads versions 2 and 3.",
            hint="Convert the model again with a current llama.cpp.",
        )
    n_tensors, n_kv = cur.u64(), cur.u64()
    if n_tensors > 1_000_000 or n_kv > 1_000_000:
        raise TruncatedModelError(
            f"{source.name}: the GGUF header claims {n_tensors} tensors and {n_kv} keys; it is corrupt.",
            hint="Download the file again.",
        )
    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = cur.string()
        metadata[key] = _read_value(cur, _value_type(cur.u32(), source.name), source.name)
    tensors = []
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.u32()
        if n_dims > 8:
            raise TruncatedModelError(
                f"{source.name}: tensor {name!r} claims {n_dims} dimensions; the header is corrupt.",
                hint="Download the file again.",
            )
        shape = tuple(cur.u64() for _ in range(n_dims))
        tensors.append(TensorInfo(name=name, shape=shape, ggml_type=cur.u32(), offset=cur.u64()))
    alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT)) or DEFAULT_ALIGNMENT
    data_offset = -(-cur.pos // alignment) * alignment
    header = GGUFHeader(
        version=version,
        metadata=metadata,
        tensors=tuple(tensors),
        data_offset=data_offset,
        header_bytes=cur.pos,
        file_size=source.total_size(),
        source=source.name,
    )
    _check_bounds(header)
    return header


def _check_bounds(header: GGUFHeader) -> None:
    """A file cut short after its header must be caught here, not by llama.cpp at load time."""
    if header.file_size is None or not header.tensors:
        return
    end = max(header.data_offset + t.offset + t.nbytes for t in header.tensors)
    if end > header.file_size:
        raise TruncatedModelError(
            f"{header.source} is truncated: its tensors need {end} bytes but the file has "
            f"{header.file_size}.",
            hint="The download was cut short; download the file again.",
        )


def _describe_magic(magic: bytes) -> str:
    if not magic:
        return "nothing: it is empty"
    head = magic.lstrip()
    if head[:1] == b"<":
        return "'<', an HTML page"
    if head[:1] == b"{":
        return "'{', a JSON document"
    return repr(magic)
