"""llama.cpp's worst-case (prompt-processing) graph, rebuilt op by op for ``ggml_sim``.

Mirrors llm_graph_context in llama.cpp/src/llama-graph.cpp (build_inp_embd, build_attn with a KV
cache, build_attn_mha, build_ffn, build_moe_ffn) and the per-architecture graphs of the llama
family (llama, mistral, granite, qwen2, qwen3, gemma 1/2/3 and their MoE variants). Architectures outside
the family are sized with the llama graph of the same dimensions, which is close but not exact.
"""

from __future__ import annotations

from dataclasses import dataclass

from kennel.fit.ggml_sim import F16, F32, I32, I64, Ctx, Graph, Tensor, reserve_size, type_size
from kennel.model.shape import ModelShape

QK_NORM_ARCHS = {"qwen3", "qwen3moe", "gemma3", "olmo2"}
GEMMA_ARCHS = {"gemma", "gemma2", "gemma3"}
POST_NORM_ARCHS = {"gemma2", "gemma3"}
BIAS_ARCHS = {"qwen2", "qwen2moe"}
NORM_W_ARCHS = {"llama", "qwen3moe", "mixtral"}  # MoE archs that renormalise the top-k weights


@dataclass(frozen=True)
class GraphParams:
    """What llama.cpp's sched_reserve builds its worst-case graph with."""

    n_tokens: int  # min(n_ctx, n_ubatch), rounded up to a multiple of n_seqs
    n_outputs: int  # min(n_ctx, n_ubatch, n_outputs_max): rows of logits the graph computes
    n_seqs: int  # n_seq_max
    kv_unified: bool
    flash_attn: bool
    type_k: str
    type_v: str
    kv_size: int  # cells per stream in the full-attention cache
    kv_size_swa: int  # cells per stream in the sliding-window cache

    @property
    def n_stream(self) -> int:
        return 1 if self.kv_unified else self.n_seqs


def _row(type_name: str, n: int) -> int:
    block, size = type_size(type_name)
    return n // block * size


class _Builder:
    def __init__(self, shape: ModelShape, p: GraphParams) -> None:
        self.s, self.p = shape, p
        self.c = Ctx()
        self.gf = Graph()
        self.arch = shape.arch
        self._caches: dict[tuple[int, str], Tensor] = {}
        self.tok_embd = self.c.weight(F16, shape.n_embd, shape.n_vocab, name="token_embd.weight")
        self._rot: dict[bool, tuple[Tensor | None, Tensor | None]] = {}
        self.iswa = bool(shape.swa_layers and any(shape.swa_layers))

    # -- inputs -------------------------------------------------------------------------

    def inp_embd(self, tok_scale: bool = False) -> Tensor:
        """build_inp_embd: three selectable inputs (token ids, raw embeddings, and a batch mixing
        both); all three stay in the graph, so the allocator places the unused ones too."""
        c, gf, s, t = self.c, self.gf, self.s, self.p.n_tokens
        tokens = c.input(I32, t, name="inp_tokens")
        inp_embd = c.input(F32, s.n_embd, t, name="inp_embd")
        mixed_tokens = c.input(I32, t, name="inp_mixed_tokens")
        tok_embd = self.tok_embd
        cur = c.get_rows(tok_embd, tokens)
        gf.expand(cur)
        mixed = c.get_rows(tok_embd, mixed_tokens)
        gf.expand(mixed)
        gf.expand(inp_embd)
        mixed_slots = c.input(I64, t, name="inp_mixed_slots")
        mixed_embd = c.input(F32, s.n_embd, t, name="inp_mixed_embd")
        gf.expand(c.set_rows(c.dup(mixed_embd), mixed, mixed_slots))
        if tok_scale:  # gemma3 scales token rows by sqrt(n_embd) through a per-row input
            cur = c.binary("MUL", cur, c.input(F32, 1, t, name="inp_scale_rows"))
        gf.expand(cur)
        return cur

    def attn_inputs(self, swa: bool) -> dict[str, Tensor | None]:
        c, p, s = self.c, self.p, self.s
        n_kv = p.kv_size_swa if swa else p.kv_size
        v_idxs_n = p.n_tokens if p.flash_attn else p.n_tokens * s.n_embd_v_gqa_max()
        mask_type = F16 if p.flash_attn else F32
        return {
            "k_idxs": c.input(I64, p.n_tokens, name="attn_inp_k_idxs"),
            "v_idxs": c.input(I64, v_idxs_n, name="attn_inp_v_idxs"),
            "mask": c.input(
                mask_type, n_kv, p.n_tokens // p.n_stream, 1, p.n_stream, name="attn_inp_kq_mask"
            ),
        }

    def rot_inputs(self, swa: bool) -> None:
        """Hadamard rotations of a quantized cache's heads (llama_kv_cache::build_input_k_rot);
        with sliding-window layers, the window cache has its own pair of inputs."""
        c, s, p = self.c, self.s, self.p
        k_quant = type_size(p.type_k)[0] > 1
        v_quant = type_size(p.type_v)[0] > 1
        rot_k = rot_v = None
        if k_quant and s.head_dim_k % 64 == 0:
            nrot = 64
            while s.head_dim_k % (nrot * 2) == 0:
                nrot *= 2
            rot_k = c.input(F32, nrot, nrot, name="attn_inp_k_rot")
        if v_quant and s.head_dim_v % 64 == 0:
            rot_v = c.input(F32, 64, 64, name="attn_inp_v_rot")
        self._rot[swa] = (rot_k, rot_v)

    # -- building blocks ----------------------------------------------------------------

    def norm(self, x: Tensor, n: int) -> Tensor:
        c = self.c
        return c.binary("MUL", c.unary("RMS_NORM", x), c.weight(F32, n))

    def cache(self, il: int, which: str) -> Tensor:
        s, p = self.s, self.p
        key = (il, which)
        if key not in self._caches:
            swa = s.is_swa(il)
            size = p.kv_size_swa if swa else p.kv_size
            if which == "k":
                self._caches[key] = self.c.weight(p.type_k, s.n_embd_k_gqa(il), size, p.n_stream)
            else:
                width = s.n_embd_v_gqa(il) if p.flash_attn else s.n_embd_v_gqa_max()
                self._caches[key] = self.c.weight(p.type_v, width, size, p.n_stream)
        return self._caches[key]

    def hadamard(self, cur: Tensor, rot: Tensor) -> Tensor:
        c = self.c
        n = rot.ne[0]
        if not cur.is_contiguous():
            res = c.cont(cur, n, cur.nelements() // n)
        else:
            res = c.reshape(cur, n, cur.nelements() // n)
        res = c.mul_mat(rot, res)
        return c.reshape(res, *cur.ne)

    def attention(self, il: int, q: Tensor, k: Tensor, v: Tensor, inp: dict[str, Tensor | None]) -> Tensor:
        c, gf, s, p = self.c, self.gf, self.s, self.p
        swa = s.is_swa(il)
        rot_k, rot_v = self._rot[swa]
        if rot_k is not None:
            q, k = self.hadamard(q, rot_k), self.hadamard(k, rot_k)
        if rot_v is not None:
            v = self.hadamard(v, rot_v)
        # build_attn expands Q, V, K (K last so that RoPE can fuse into the cache write); the
        # sliding-window variant expands Q, K, V
        for cur in (q, k, v) if self.iswa else (q, v, k):
            gf.expand(cur)
        t, ns = p.n_tokens, p.n_stream
        kc, vc = self.cache(il, "k"), self.cache(il, "v")
        n_kv = p.kv_size_swa if swa else p.kv_size
        gf.expand(self.cpy_k(k, kc, inp["k_idxs"]))  # type: ignore[arg-type]
        gf.expand(self.cpy_v(v, vc, inp["v_idxs"]))  # type: ignore[arg-type]
        hk, dk, dv = s.n_head_kv[il], s.head_dim_k, s.head_dim_v
        kv = c.view(
            kc,
            [dk, hk, n_kv, ns],
            [_row(p.type_k, dk), _row(p.type_k, kc.ne[0]), _row(p.type_k, kc.ne[0] * kc.ne[1])],
            0,
        )
        if p.flash_attn:
            vv = c.view(
                vc,
                [dv, hk, n_kv, ns],
                [_row(p.type_v, dv), _row(p.type_v, vc.ne[0]), _row(p.type_v, vc.ne[0] * vc.ne[1])],
                0,
            )
        else:
            vv = c.view(
                vc,
                [n_kv, hk, dv, ns],
                [
                    _row(p.type_v, vc.ne[1] * dv),
                    _row(p.type_v, vc.ne[1]),
                    _row(p.type_v, vc.ne[1] * vc.ne[0]),
                ],
                0,
            )
        cur = self.mha(q, kv, vv, inp["mask"], t // ns, ns)  # type: ignore[arg-type]
        if rot_v is not None:
            cur = self.hadamard(cur, rot_v)
        return c.mul_mat(c.weight(F16, cur.ne[0], s.n_embd), cur)

    def cpy_k(self, k: Tensor, kc: Tensor, idxs: Tensor) -> Tensor:
        c = self.c
        n_gqa = k.ne[0] * k.ne[1]
        kview = c.view(k, [n_gqa, k.ne[2]], [k.nb[2]], 0)
        if kc.ne[2] > 1:
            kc = c.reshape(kc, n_gqa, kc.ne[1] * kc.ne[2])
        return c.set_rows(kc, kview, idxs)

    def cpy_v(self, v: Tensor, vc: Tensor, idxs: Tensor) -> Tensor:
        c, p = self.c, self.p
        n_gqa = v.ne[0] * v.ne[1]
        if p.flash_attn:
            vview = c.view(v, [n_gqa, v.ne[2]], [v.nb[2]], 0)
            if vc.ne[2] > 1:
                vc = c.reshape(vc, n_gqa, vc.ne[1] * vc.ne[2])
            return c.set_rows(vc, vview, idxs)
        # merge head and row dimensions in place when V is contiguous, else copy
        vcur = c.reshape(v, n_gqa, v.ne[2]) if _row(v.type, n_gqa) == v.nb[2] else c.cont(v, n_gqa, v.ne[2])
        if n_gqa < vc.ne[0]:
            vcur = c._op("PAD", c.new(vcur.type, vc.ne[0], vcur.ne[1]), vcur)
        v_view = c.reshape(vc, 1, vc.nelements())
        vcur = c.reshape(vcur, 1, vcur.nelements())
        return c.set_rows(v_view, vcur, idxs)

    def mha(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor, t_per_stream: int, ns: int) -> Tensor:
        c, gf = self.c, self.gf
        v_trans = v.nb[1] > v.nb[2]
        q = c.view(q, [q.ne[0], q.ne[1], q.ne[2] // ns, ns], [q.nb[1], q.nb[2], q.nb[2] * (q.ne[2] // ns)], 0)
        q = c.permute(q, 0, 2, 1, 3)
        k = c.permute(k, 0, 2, 1, 3)
        v = c.permute(v, 0, 2, 1, 3)
        if self.p.flash_attn:
            if v_trans:
                v = c.transpose(v)
            cur = c.flash_attn_ext(q, k, v, mask)
            cur = c.reshape(cur, cur.ne[0] * cur.ne[1], cur.ne[2] * cur.ne[3])
        else:
            kq = c.mul_mat(k, q)
            if self.arch == "gemma2":  # attention logit soft-capping
                kq = c.unary("SCALE", kq)
                kq = c.unary("UNARY", kq)
                kq = c.unary("SCALE", kq)
            kq = c.soft_max_ext(kq, mask)
            if not v_trans:
                v = c.cont(c.transpose(v))
            kqv = c.mul_mat(v, kq)
            cur = c.permute(kqv, 0, 2, 1, 3)
            cur = c.cont(cur, cur.ne[0] * cur.ne[1], cur.ne[2] * cur.ne[3])
        gf.expand(cur)
        return cur

    def ffn(self, cur: Tensor, il: int) -> Tensor:
        c, s = self.c, self.s
        n_ff = s.n_ff[il]
        up = c.mul_mat(c.weight(F16, s.n_embd, n_ff), cur)
        gate = c.mul_mat(c.weight(F16, s.n_embd, n_ff), cur)
        act = c.glu_split(gate, up)
        return c.mul_mat(c.weight(F16, n_ff, s.n_embd), act)

    def moe(self, cur: Tensor, il: int) -> Tensor:
        c, gf, s = self.c, self.gf, self.s
        e, t, n_exp, n_used, f = s.n_embd, cur.ne[1], s.n_expert, s.n_expert_used, s.n_ff_exp
        logits = c.mul_mat(c.weight(F32, e, n_exp), cur)
        probs = c.soft_max_ext(logits, None)
        selected = c.argsort_top_k(probs, n_used)
        probs3 = c.reshape(probs, 1, n_exp, t)
        weights = c.get_rows(probs3, selected)
        if self.arch in NORM_W_ARCHS:
            weights = c.reshape(weights, n_used, t)
            wsum = c.clamp(c.sum_rows(weights))
            weights = c.binary("DIV", weights, wsum)
            weights = c.reshape(weights, 1, n_used, t)
        gf.expand(weights)
        x = c.reshape(cur, e, 1, t)
        up = c.mul_mat_id(c.weight(F16, e, f, n_exp), x, selected)
        gate = c.mul_mat_id(c.weight(F16, e, f, n_exp), x, selected)
        act = c.glu_split(gate, up)
        experts = c.mul_mat_id(c.weight(F16, f, e, n_exp), act, selected)
        experts = c.binary("MUL", experts, weights)
        gf.expand(experts)
        views = [c.view(experts, [e, t], [experts.nb[2]], i * experts.nb[1]) for i in range(n_used)]
        for v in views:
            gf.expand(v)
        out = views[0]
        for v in views[1:]:
            out = c.binary("ADD", out, v)
            gf.expand(out)
        if n_used == 1:
            out = c.cont(out)
        if s.n_expert_shared and s.n_ff_shexp:
            shared = self._shared_expert(cur, il)
            out = c.binary("ADD", out, shared)
        return out

    def _shared_expert(self, cur: Tensor, il: int) -> Tensor:
        c, s = self.c, self.s
        fs = s.n_ff_shexp
        up = c.mul_mat(c.weight(F16, s.n_embd, fs), cur)
        gate = c.mul_mat(c.weight(F16, s.n_embd, fs), cur)
        out = c.mul_mat(c.weight(F16, fs, s.n_embd), c.glu_split(gate, up))
        if self.arch == "qwen2moe":
            gate_inp = c.mul_mat(c.weight(F32, s.n_embd, 1), cur)
            g = c.binary("DIV", c.unary("UNARY", gate_inp), gate_inp)  # sigmoid as silu(x) / x
            out = c.binary("MUL", out, g)
        return out

    # -- the whole graph ----------------------------------------------------------------

    def build(self) -> Graph:
        c, gf, s, p = self.c, self.gf, self.s, self.p
        inp_l = self.inp_embd(tok_scale=self.arch == "gemma3")
        if self.arch in ("gemma", "gemma2", "granite"):  # embedding scale
            inp_l = c.unary("SCALE", inp_l)
        pos = c.input(I32, p.n_tokens, name="inp_pos")
        inputs = {False: self.attn_inputs(False)}
        self.rot_inputs(False)
        if self.iswa:
            inputs[True] = self.attn_inputs(True)
            self.rot_inputs(True)
        out_ids = c.input(I32, p.n_outputs, name="out_ids")
        for il in range(s.n_layer):
            inp_sa = inp_l
            cur = self.norm(inp_l, s.n_embd)
            q, k, v = self.qkv(cur, il, pos)
            cur = self.attention(il, q, k, v, inputs[s.is_swa(il)])
            if il == s.n_layer - 1:
                cur = c.get_rows(cur, out_ids)
                inp_sa = c.get_rows(inp_sa, out_ids)
            if self.arch in POST_NORM_ARCHS:
                cur = self.norm(cur, s.n_embd)
            if self.arch == "granite":  # residual scale
                cur = c.unary("SCALE", cur)
            ffn_inp = c.binary("ADD", cur, inp_sa)
            cur = self.norm(ffn_inp, s.n_embd)
            cur = self.ffn(cur, il) if s.n_ff[il] else self.moe(cur, il)
            if self.arch in POST_NORM_ARCHS:
                cur = self.norm(cur, s.n_embd)
            if self.arch == "granite":
                cur = c.unary("SCALE", cur)
            inp_l = c.binary("ADD", cur, ffn_inp)
        cur = self.norm(inp_l, s.n_embd)
        cur.is_output = True  # result_norm (t_embd)
        out_w = self.tok_embd if s.tied_embeddings else c.weight(F16, s.n_embd, s.n_vocab)
        logits = c.mul_mat(out_w, cur)
        if self.arch == "gemma2":  # final logit soft-capping
            logits = c.unary("SCALE", c.unary("UNARY", c.unary("SCALE", logits)))
        if self.arch == "granite":  # logit scale
            logits = c.unary("SCALE", logits)
        logits.is_output = True
        gf.expand(logits)
        return gf

    def qkv(self, cur: Tensor, il: int, pos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        c, s, t = self.c, self.s, self.p.n_tokens
        hq, hk, dk, dv = s.n_head[il], s.n_head_kv[il], s.head_dim_k, s.head_dim_v
        q = c.mul_mat(c.weight(F16, s.n_embd, hq * dk), cur)
        if self.arch in BIAS_ARCHS:
            q = c.binary("ADD", q, c.weight(F32, hq * dk))
        k = c.mul_mat(c.weight(F16, s.n_embd, hk * dk), cur)
        if self.arch in BIAS_ARCHS:
            k = c.binary("ADD", k, c.weight(F32, hk * dk))
        v = c.mul_mat(c.weight(F16, s.n_embd, hk * dv), cur)
        if self.arch in BIAS_ARCHS:
            v = c.binary("ADD", v, c.weight(F32, hk * dv))
        q, k, v = c.reshape(q, dk, hq, t), c.reshape(k, dk, hk, t), c.reshape(v, dv, hk, t)
        if self.arch in QK_NORM_ARCHS:
            q = c.rope(self.norm(q, dk), pos)
            k = c.rope(self.norm(k, dk), pos)
        else:
            q = c.rope(q, pos)
            k = c.rope(k, pos)
        if self.arch in GEMMA_ARCHS:
            q = c.unary("SCALE", q)
        return q, k, v


def build_graph(shape: ModelShape, params: GraphParams) -> Graph:
    return _Builder(shape, params).build()


def compute_buffer_bytes(shape: ModelShape, params: GraphParams, *, alignment: int = 32) -> int:
    """The compute buffer llama.cpp reserves on one backend running the whole graph."""
    return reserve_size(build_graph(shape, params), alignment=alignment)
