"""A small model of ggml's graph and graph allocator, to predict llama.cpp's compute buffer.

llama.cpp reserves its compute buffer by building the worst-case graph and letting ggml-alloc
place every intermediate tensor in one buffer, reusing memory as tensors die. The size is the
allocator's high-water mark, which no closed formula matches: it depends on node order, which
tensors may be computed in place, views keeping their sources alive, and best-fit placement.
So kennel replays exactly that: tensors with ggml's shapes and strides, ``ggml_build_forward_expand``'s
depth-first node order, and ``ggml_gallocr``'s allocation (ggml/src/ggml-alloc.c) step by step.
Only sizes are modelled, never data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

F32, F16, I32, I64 = "F32", "F16", "I32", "I64"
_PLAIN_SIZES = {F32: 4, F16: 2, I32: 4, I64: 8, "BF16": 2}

# ops whose output may take over their input's memory (ggml_op_can_inplace)
INPLACE_OPS = frozenset(
    [
        "FILL",
        "SCALE",
        "DIAG_MASK_ZERO",
        "DIAG_MASK_INF",
        "ADD",
        "ADD_ID",
        "ADD1",
        "SUB",
        "MUL",
        "DIV",
        "SQR",
        "SQRT",
        "LOG",
        "UNARY",
        "ROPE",
        "ROPE_BACK",
        "SILU_BACK",
        "RMS_NORM",
        "RMS_NORM_BACK",
        "CLAMP",
        "SOFT_MAX",
        "SOFT_MAX_BACK",
    ]
)


def type_size(type_name: str) -> tuple[int, int]:
    """(block size, bytes per block) of a ggml type."""
    if type_name in _PLAIN_SIZES:
        return 1, _PLAIN_SIZES[type_name]
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[type_name]]
    return block, size


@dataclass(eq=False)
class Tensor:
    type: str
    ne: list[int]
    nb: list[int]
    op: str = "NONE"
    src: list[Tensor] = field(default_factory=list)
    view_src: Tensor | None = None
    view_offs: int = 0
    name: str = ""
    is_input: bool = False
    is_output: bool = False
    external: bool = False  # weights and KV cache: memory that is not the compute buffer's

    @property
    def is_view(self) -> bool:
        return self.view_src is not None

    def nbytes(self) -> int:
        block, size = type_size(self.type)
        if any(n == 0 for n in self.ne):
            return 0
        if block == 1:
            return size + sum((self.ne[i] - 1) * self.nb[i] for i in range(4))
        total = self.ne[0] * self.nb[0] // block
        return total + sum((self.ne[i] - 1) * self.nb[i] for i in range(1, 4))

    def same_layout(self, other: Tensor) -> bool:
        return self.type == other.type and self.ne == other.ne and self.nb == other.nb

    def is_contiguous(self) -> bool:
        return self.nb == _contiguous_nb(self.type, self.ne)

    def nelements(self) -> int:
        return self.ne[0] * self.ne[1] * self.ne[2] * self.ne[3]


def _contiguous_nb(type_name: str, ne: Sequence[int]) -> list[int]:
    block, size = type_size(type_name)
    nb = [size, size * (ne[0] // block)]
    nb.append(nb[1] * ne[1])
    nb.append(nb[2] * ne[2])
    return nb


def _ne4(ne: Sequence[int]) -> list[int]:
    return [*list(ne), 1, 1, 1, 1][:4]


class Ctx:
    """The ggml operations llama.cpp's graphs use, with ggml's output shapes and view rules."""

    # -- creation -----------------------------------------------------------------------

    def new(self, type_name: str, *ne: int, name: str = "") -> Tensor:
        n4 = _ne4(ne)
        return Tensor(type=type_name, ne=n4, nb=_contiguous_nb(type_name, n4), name=name)

    def weight(self, type_name: str, *ne: int, name: str = "") -> Tensor:
        t = self.new(type_name, *ne, name=name)
        t.external = True
        return t

    def input(self, type_name: str, *ne: int, name: str = "") -> Tensor:
        t = self.new(type_name, *ne, name=name)
        t.is_input = True
        return t

    def _op(self, op: str, out: Tensor, *src: Tensor) -> Tensor:
        out.op = op
        out.src = list(src)
        return out

    def _dup(self, a: Tensor) -> Tensor:
        return self.new(a.type, *a.ne)

    def _view(self, a: Tensor, ne: Sequence[int], nb: Sequence[int], offs: int, op: str) -> Tensor:
        root = a.view_src or a
        t = Tensor(
            type=a.type, ne=_ne4(ne), nb=list(nb), op=op, src=[a], view_src=root, view_offs=a.view_offs + offs
        )
        return t

    # -- views --------------------------------------------------------------------------

    def view_tensor(self, a: Tensor) -> Tensor:
        return self._view(a, a.ne, a.nb, 0, "VIEW")

    def reshape(self, a: Tensor, *ne: int) -> Tensor:
        n4 = _ne4(ne)
        return self._view(a, n4, _contiguous_nb(a.type, n4), 0, "RESHAPE")

    def view(self, a: Tensor, ne: Sequence[int], nb_rest: Sequence[int], offset: int) -> Tensor:
        size = type_size(a.type)[1]
        n4 = _ne4(ne)
        nb = [size, *nb_rest]
        while len(nb) < 4:
            nb.append(nb[-1] * n4[len(nb) - 1])
        return self._view(a, n4, nb, offset, "VIEW")

    def permute(self, a: Tensor, *axes: int) -> Tensor:
        ne, nb = [0] * 4, [0] * 4
        for i, ax in enumerate(axes):
            ne[ax], nb[ax] = a.ne[i], a.nb[i]
        return self._view(a, ne, nb, 0, "PERMUTE")

    def transpose(self, a: Tensor) -> Tensor:
        return self.permute(a, 1, 0, 2, 3)

    # -- compute ops --------------------------------------------------------------------

    def unary(self, op: str, a: Tensor) -> Tensor:
        return self._op(op, self._dup(a), a)

    def binary(self, op: str, a: Tensor, b: Tensor) -> Tensor:
        return self._op(op, self._dup(a), a, b)

    def mul_mat(self, a: Tensor, b: Tensor) -> Tensor:
        return self._op("MUL_MAT", self.new(F32, a.ne[1], b.ne[1], b.ne[2], b.ne[3]), a, b)

    def mul_mat_id(self, as_: Tensor, b: Tensor, ids: Tensor) -> Tensor:
        return self._op("MUL_MAT_ID", self.new(F32, as_.ne[1], ids.ne[0], b.ne[2], 1), as_, b, ids)

    def get_rows(self, a: Tensor, b: Tensor) -> Tensor:
        out_type = I32 if a.type == I32 else F32
        return self._op("GET_ROWS", self.new(out_type, a.ne[0], b.ne[0], b.ne[1], b.ne[2]), a, b)

    def rope(self, a: Tensor, pos: Tensor) -> Tensor:
        return self._op("ROPE", self._dup(a), a, pos)

    def soft_max_ext(self, a: Tensor, mask: Tensor | None) -> Tensor:
        src = (a, mask) if mask is not None else (a,)
        return self._op("SOFT_MAX", self._dup(a), *src)

    def set_rows(self, dst: Tensor, b: Tensor, idxs: Tensor) -> Tensor:
        out = self.view_tensor(dst)
        out.op, out.src = "SET_ROWS", [b, idxs, dst]
        return out

    def dup(self, a: Tensor) -> Tensor:
        return self._op("DUP", self._dup(a), a)

    def cont(self, a: Tensor, *ne: int) -> Tensor:
        return self._op("CONT", self.new(a.type, *(ne or a.ne)), a)

    def glu_split(self, a: Tensor, b: Tensor) -> Tensor:
        return self._op("GLU", self.new(a.type, *a.ne), a, b)

    def flash_attn_ext(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
        return self._op("FLASH_ATTN_EXT", self.new(F32, v.ne[0], q.ne[2], q.ne[1], q.ne[3]), q, k, v, mask)

    def argsort_top_k(self, a: Tensor, k: int) -> Tensor:
        srt = self._op("ARGSORT", self.new(I32, *a.ne), a)
        return self.view(srt, [k, *a.ne[1:]], srt.nb[1:], 0)

    def sum_rows(self, a: Tensor) -> Tensor:
        return self._op("SUM_ROWS", self.new(a.type, 1, *a.ne[1:]), a)

    def clamp(self, a: Tensor) -> Tensor:
        return self.unary("CLAMP", a)  # a new tensor (ggml_clamp is no longer a view of its source)

    def cast(self, a: Tensor, type_name: str) -> Tensor:
        return self._op("CPY", self.new(type_name, *a.ne), a)


class Graph:
    """Nodes and leafs in ggml_build_forward_expand's depth-first order."""

    def __init__(self) -> None:
        self.nodes: list[Tensor] = []
        self.leafs: list[Tensor] = []
        self._visited: set[int] = set()

    def expand(self, t: Tensor) -> None:
        stack: list[tuple[Tensor, int]] = [(t, 0)]
        while stack:
            node, i = stack.pop()
            if i == 0:
                if id(node) in self._visited:
                    continue
                self._visited.add(id(node))
            if i < len(node.src):
                stack.append((node, i + 1))
                stack.append((node.src[i], 0))
                continue
            if node.op == "NONE":
                self.leafs.append(node)
            else:
                self.nodes.append(node)


@dataclass
class _Hash:
    n_children: int = 0
    n_views: int = 0
    allocated: bool = False
    offset: int = 0


class _DynAllocator:
    """ggml_dyn_tallocr with a single chunk: best-fit over free blocks, growing the last one."""

    def __init__(self, alignment: int) -> None:
        self.alignment = alignment
        self.free: list[list[int]] = [[0, 1 << 62]]  # [offset, size], sorted by offset
        self.max_size = 0

    def _align(self, n: int) -> int:
        return -(-n // self.alignment) * self.alignment

    def alloc(self, size: int) -> int:
        size = self._align(size)
        best, best_size = -1, None
        for i, (_, bsize) in enumerate(self.free[:-1]):
            if bsize >= size and (best_size is None or bsize <= best_size):
                best, best_size = i, bsize
        if best == -1:
            best = len(self.free) - 1
        block = self.free[best]
        offset = block[0]
        block[0] += size
        block[1] -= size
        if block[1] == 0:
            del self.free[best]
        self.max_size = max(self.max_size, offset + size)
        return offset

    def free_bytes(self, offset: int, size: int) -> None:
        size = self._align(size)
        for i, block in enumerate(self.free):
            if block[0] + block[1] == offset:
                block[1] += size
                if i < len(self.free) - 1 and block[0] + block[1] == self.free[i + 1][0]:
                    block[1] += self.free[i + 1][1]
                    del self.free[i + 1]
                return
            if offset + size == block[0]:
                block[0] = offset
                block[1] += size
                if i > 0 and self.free[i - 1][0] + self.free[i - 1][1] == block[0]:
                    self.free[i - 1][1] += block[1]
                    del self.free[i]
                return
        pos = 0
        while pos < len(self.free) and self.free[pos][0] < offset:
            pos += 1
        self.free.insert(pos, [offset, size])


def reserve_size(graph: Graph, *, alignment: int = 32) -> int:
    """Bytes ggml_gallocr reserves for ``graph`` in one buffer (ggml_gallocr_alloc_graph_impl)."""
    alloc = _DynAllocator(alignment)
    hashes: dict[int, _Hash] = {}

    def h(t: Tensor) -> _Hash:
        return hashes.setdefault(id(t), _Hash())

    def is_allocated(t: Tensor) -> bool:
        return t.external or h(t).allocated

    def allocate(node: Tensor) -> None:
        hn = h(node)
        if is_allocated(node) or node.is_view:
            return
        hn.allocated = True
        if node.op in INPLACE_OPS:
            for parent in node.src:
                ph = h(parent)
                if (
                    not ph.allocated
                    or parent.is_output
                    or (parent.view_src is not None and parent.view_src.is_output)
                ):
                    continue
                if not node.same_layout(parent):
                    continue
                if ph.n_children == 1 and ph.n_views == 0:
                    # a view parent never counts as "own" here (ggml_gallocr_is_own), so only a
                    # non-view parent's memory can be taken over
                    hn.offset = ph.offset
                    ph.allocated = False
                    extra = alloc._align(parent.nbytes()) - alloc._align(node.nbytes())
                    if extra > 0:
                        alloc.free_bytes(ph.offset + alloc._align(node.nbytes()), extra)
                    return
        hn.offset = alloc.alloc(node.nbytes())

    def free(t: Tensor) -> None:
        if t.is_output:
            return
        alloc.free_bytes(h(t).offset, t.nbytes())
        h(t).allocated = False

    for leaf in graph.leafs:
        allocate(leaf)
    for node in graph.nodes:
        if node.is_view:
            h(node.view_src).n_views += 1  # type: ignore[arg-type]
        if node.is_input:
            allocate(node)
        for src in node.src:
            h(src).n_children += 1
            if src.is_input:
                allocate(src)
    for node in graph.nodes:
        for parent in node.src:
            allocate(parent)
        allocate(node)
        for parent in node.src:
            ph = h(parent)
            ph.n_children -= 1
            if ph.n_children == 0 and ph.n_views == 0:
                if parent.is_view:
                    root = parent.view_src
                    rh = h(root)  # type: ignore[arg-type]
                    rh.n_views -= 1
                    if rh.n_views == 0 and rh.n_children == 0 and rh.allocated:
                        free(root)  # type: ignore[arg-type]
                elif ph.allocated:
                    free(parent)
    return alloc.max_size
