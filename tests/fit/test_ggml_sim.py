"""The ggml allocator model on small hand-built graphs."""

from __future__ import annotations

from kennel.fit.ggml_sim import F32, Ctx, Graph, _DynAllocator, reserve_size


def test_best_fit_reuses_freed_block() -> None:
    a = _DynAllocator(32)
    x = a.alloc(100)  # 128 after alignment
    y = a.alloc(64)
    a.free_bytes(x, 100)
    z = a.alloc(96)  # fits in x's hole
    assert (x, y, z) == (0, 128, 0)
    assert a.max_size == 192


def test_adjacent_free_blocks_merge() -> None:
    a = _DynAllocator(32)
    x, y, z = a.alloc(64), a.alloc(64), a.alloc(64)
    a.free_bytes(x, 64)
    a.free_bytes(y, 64)
    assert a.alloc(128) == 0  # the merged hole holds the larger block
    assert z == 128


def test_chain_of_unary_ops_runs_in_place() -> None:
    c = Ctx()
    h = c.unary("SCALE", c.unary("RMS_NORM", c.mul_mat(c.weight(F32, 16, 1024), c.weight(F32, 16, 1))))
    g = Graph()
    g.expand(h)
    # one mul_mat output (4 KiB), taken over in place by both unary ops
    assert reserve_size(g) == 4 * 1024


def test_views_keep_their_source_alive() -> None:
    c = Ctx()
    w = c.weight(F32, 8, 256)
    a = c.mul_mat(w, c.input(F32, 8, 1))  # 1 KiB
    v = c.view(a, [128], [], 0)
    b = c.mul_mat(c.weight(F32, 8, 128), c.input(F32, 8, 1))
    out = c.binary("ADD", c.cont(v), b)
    g = Graph()
    g.expand(out)
    assert reserve_size(g) >= 1024  # a is not freed before its view's user ran


def test_outputs_are_never_reused() -> None:
    c = Ctx()
    x = c.mul_mat(c.weight(F32, 4, 1024), c.weight(F32, 4, 1))
    x.is_output = True
    y = c.unary("SCALE", x)
    g = Graph()
    g.expand(y)
    assert reserve_size(g) == 2 * 4096


def test_clamp_is_a_new_tensor_that_may_run_in_place() -> None:
    c = Ctx()
    x = c.sum_rows(c.mul_mat(c.weight(F32, 4, 1024), c.weight(F32, 4, 8)))
    y = c.clamp(x)
    assert y.view_src is None and y.op == "CLAMP"
    g = Graph()
    g.expand(c.unary("SCALE", y))
    # mul_mat (32 KiB), then sum_rows (32 B) whose memory clamp and scale take over in place
    assert reserve_size(g) == 4 * 1024 * 8 + 32
