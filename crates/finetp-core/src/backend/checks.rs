//! The shape rules of the contract's calls that need no device data, written once for every
//! backend (each still checks dtypes and whatever it can only see in its own buffers).

use super::{Backend, BackendError, Block, DType, KvIndex, MoeRouting, Tensor};

fn shape_err(detail: String) -> BackendError {
    BackendError::Shape(detail)
}

/// A checked block copy in bytes: where it starts in each buffer, each side's row pitch, and
/// the bytes and rows it moves (what a device's 2-D copy takes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockBytes {
    pub src_offset: usize,
    pub dst_offset: usize,
    pub src_pitch: usize,
    pub dst_pitch: usize,
    /// Bytes of one row of the block.
    pub width: usize,
    pub rows: usize,
}

impl BlockBytes {
    /// Nothing to copy.
    pub fn is_empty(&self) -> bool {
        self.rows == 0 || self.width == 0
    }

    /// One contiguous run (one row, or whole rows on both sides).
    pub fn is_contiguous(&self) -> bool {
        self.rows == 1 || (self.width == self.src_pitch && self.width == self.dst_pitch)
    }
}

/// `copy_block`'s rules: the same dtype on both sides, and the block inside both tensors.
/// Returns the copy in bytes.
pub fn copy_block<B: Backend>(src: &Tensor<B>, dst: &Tensor<B>, b: &Block) -> Result<BlockBytes, BackendError> {
    if src.dtype() != dst.dtype() {
        return Err(shape_err(format!("copy_block: dtype {} into {}", src.dtype(), dst.dtype())));
    }
    let fits = |row: usize, col: usize, t_rows: usize, width: usize| {
        row.checked_add(b.rows).is_some_and(|r| r <= t_rows) && col.checked_add(b.cols).is_some_and(|c| c <= width)
    };
    if !fits(b.src_row, b.src_col, src.rows(), src.row_len()) || !fits(b.dst_row, b.dst_col, dst.rows(), dst.row_len()) {
        return Err(shape_err(format!(
            "copy_block: {}x{} block from ({},{}) of {:?} to ({},{}) of {:?} is out of bounds",
            b.rows,
            b.cols,
            b.src_row,
            b.src_col,
            src.shape(),
            b.dst_row,
            b.dst_col,
            dst.shape()
        )));
    }
    let es = src.dtype().size_in_bytes();
    let (src_pitch, dst_pitch) = (src.row_len() * es, dst.row_len() * es);
    Ok(BlockBytes { src_offset: b.src_row * src_pitch + b.src_col * es, dst_offset: b.dst_row * dst_pitch + b.dst_col * es, src_pitch, dst_pitch, width: b.cols * es, rows: b.rows })
}

/// The dims of a paged KV cache and the step's index into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheDims {
    /// Blocks in the pool and rows per block.
    pub blocks: usize,
    pub block_size: usize,
    pub heads: usize,
    pub dim: usize,
    /// Sequence slots (rows of the block table) and blocks per slot.
    pub seqs: usize,
    pub max_blocks: usize,
}

/// `[blocks, block_size, heads, dim]` of a cache pool and `[S, max_blocks]` of its block
/// table (`what` names the cache in the error).
pub fn cache_dims<B: Backend>(c: &Tensor<B>, index: &KvIndex<'_, B>, what: &str) -> Result<CacheDims, BackendError> {
    let [blocks, block_size, heads, dim] = c.shape().try_into().map_err(|_| shape_err(format!("{what} must be [blocks, block_size, heads, dim], got {:?}", c.shape())))?;
    let [seqs, max_blocks] = index.block_table.shape().try_into().map_err(|_| shape_err(format!("{what}: the block table must be [slots, max_blocks], got {:?}", index.block_table.shape())))?;
    if block_size == 0 {
        return Err(shape_err(format!("{what}: blocks of zero rows {:?}", c.shape())));
    }
    for (t, name) in [(index.block_table, "block table"), (index.slots, "slots"), (index.positions, "positions")] {
        if t.dtype() != DType::U32 {
            return Err(shape_err(format!("{what}: the {name} must be u32, got {}", t.dtype())));
        }
    }
    Ok(CacheDims { blocks, block_size, heads, dim, seqs, max_blocks })
}

/// `kv_cache_write`'s rules: `x [T, n, d]` rows for a cache `[blocks, bs, n, d]`, and `T` slots
/// and positions.
pub fn kv_cache_write<B: Backend>(x: &Tensor<B>, cache: &Tensor<B>, index: &KvIndex<'_, B>) -> Result<CacheDims, BackendError> {
    let dims = cache_dims(cache, index, "kv_cache_write: cache")?;
    let t = x.rows();
    if x.shape() != [t, dims.heads, dims.dim] {
        return Err(shape_err(format!("kv_cache_write: rows {:?} for a cache {:?}", x.shape(), cache.shape())));
    }
    rows_of("kv_cache_write", index, t)?;
    Ok(dims)
}

/// The dims of one `kv_cache_attention` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionDims {
    /// Query rows.
    pub t: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub dk: usize,
    pub dv: usize,
    pub cache: CacheDims,
}

/// `kv_cache_attention`'s rules: `q [T, nh, dk]`, caches `[blocks, bs, nkv, dk]` /
/// `[blocks, bs, nkv, dv]`, `nh % nkv == 0`, `y [T, nh, dv]`, and `T` slots and positions.
pub fn kv_cache_attention<B: Backend>(q: &Tensor<B>, k: &Tensor<B>, v: &Tensor<B>, index: &KvIndex<'_, B>, y: &Tensor<B>) -> Result<AttentionDims, BackendError> {
    let bad = |why: &str| shape_err(format!("kv_cache_attention: q {:?}, k {:?}, v {:?}, y {:?}: {why}", q.shape(), k.shape(), v.shape(), y.shape()));
    let [t, nh, dk] = *q.shape() else {
        return Err(bad("q must be [T, heads, dk]"));
    };
    let kd = cache_dims(k, index, "kv_cache_attention: k cache")?;
    let vd = cache_dims(v, index, "kv_cache_attention: v cache")?;
    if dk != kd.dim || (kd.blocks, kd.block_size, kd.heads) != (vd.blocks, vd.block_size, vd.heads) {
        return Err(bad("k and v caches do not match q"));
    }
    if kd.heads == 0 || !nh.is_multiple_of(kd.heads) {
        return Err(bad("query heads must be a multiple of kv heads"));
    }
    if y.shape() != [t, nh, vd.dim] {
        return Err(bad("y must be [T, heads, dv]"));
    }
    rows_of("kv_cache_attention", index, t)?;
    Ok(AttentionDims { t, heads: nh, kv_heads: kd.heads, dk, dv: vd.dim, cache: kd })
}

/// One slot and one position per row.
fn rows_of<B: Backend>(op: &str, index: &KvIndex<'_, B>, t: usize) -> Result<(), BackendError> {
    if index.slots.numel() != t || index.positions.numel() != t {
        return Err(shape_err(format!("{op}: {} slots and {} positions for {t} rows", index.slots.numel(), index.positions.numel())));
    }
    Ok(())
}

/// `sample`'s rules: `logits [M, V]` with `V > 0` when `M > 0`, `params` f32 `[M, 4]`, `ids`
/// u32 `[M]`. Returns `(M, V)`.
pub fn sample<B: Backend>(logits: &Tensor<B>, params: &Tensor<B>, ids: &Tensor<B>) -> Result<(usize, usize), BackendError> {
    let [m, v] = *logits.shape() else {
        return Err(shape_err(format!("sample: logits must be [rows, vocab], got {:?}", logits.shape())));
    };
    if v == 0 && m > 0 {
        return Err(shape_err(format!("sample: rows of zero logits {:?}", logits.shape())));
    }
    if params.shape() != [m, 4] || params.dtype() != DType::F32 {
        return Err(shape_err(format!("sample: params must be f32 [{m}, 4], got {:?} {}", params.shape(), params.dtype())));
    }
    if ids.numel() != m || ids.dtype() != DType::U32 {
        return Err(shape_err(format!("sample: ids must be u32 [{m}], got {:?} {}", ids.shape(), ids.dtype())));
    }
    Ok((m, v))
}

/// `moe_route`'s rules: `router_logits` f32 `[T, E]`, `bias` f32 `[E]`, `ids` u32 and `weights`
/// f32 `[T, top_k]`, groups dividing the experts, `top_k` reachable. Returns `(T, E)`.
pub fn moe_route<B: Backend>(logits: &Tensor<B>, bias: Option<&Tensor<B>>, rule: &MoeRouting, ids: &Tensor<B>, weights: &Tensor<B>) -> Result<(usize, usize), BackendError> {
    let [t, e] = *logits.shape() else {
        return Err(shape_err(format!("moe_route: router logits must be [tokens, experts], got {:?}", logits.shape())));
    };
    if logits.dtype() != DType::F32 || bias.is_some_and(|b| b.dtype() != DType::F32 || b.numel() != e) {
        return Err(shape_err(format!("moe_route: router logits and bias must be f32 [.., {e}]")));
    }
    let (g, k) = (rule.n_group.max(1), rule.top_k);
    if e == 0 || !e.is_multiple_of(g) || rule.topk_group == 0 || rule.topk_group > g || k == 0 || k > rule.topk_group * (e / g) {
        return Err(shape_err(format!(
            "moe_route: {k} of {e} experts in {g} groups, {} allowed, is not a routable rule",
            rule.topk_group
        )));
    }
    if ids.shape() != [t, k] || ids.dtype() != DType::U32 || weights.shape() != [t, k] || weights.dtype() != DType::F32 {
        return Err(shape_err(format!("moe_route: ids (u32) and weights (f32) must be [{t}, {k}], got {:?} {} and {:?} {}", ids.shape(), ids.dtype(), weights.shape(), weights.dtype())));
    }
    Ok((t, e))
}

/// `write`'s rules: the host data has the tensor's shape and dtype.
pub fn write<B: Backend>(t: &Tensor<B>, host: &super::HostTensor) -> Result<(), BackendError> {
    if host.shape != t.shape() || host.dtype() != t.dtype() {
        return Err(shape_err(format!("write: host {:?} {} into a tensor {:?} {}", host.shape, host.dtype(), t.shape(), t.dtype())));
    }
    Ok(())
}

/// `linear`'s rules: `x [m, k]`, `w [n, k]`, `bias [n]`, `y [m, n]`, `x` and `y` f32. Returns
/// `(m, n, k)`.
pub fn linear<B: Backend>(x: &Tensor<B>, w: &Tensor<B>, bias: Option<&Tensor<B>>, y: &Tensor<B>) -> Result<(usize, usize, usize), BackendError> {
    let two = |t: &Tensor<B>, what: &str| -> Result<[usize; 2], BackendError> { t.shape().try_into().map_err(|_| shape_err(format!("linear: {what} must be 2-D, got {:?}", t.shape()))) };
    let ([m, k], [n, kw], [my, ny]) = (two(x, "x")?, two(w, "w")?, two(y, "y")?);
    if k != kw || m != my || n != ny || bias.is_some_and(|b| b.numel() != n) {
        return Err(shape_err(format!("linear: x {:?} · w {:?}ᵀ into y {:?}", x.shape(), w.shape(), y.shape())));
    }
    f32_activation(x, "linear x")?;
    f32_activation(y, "linear y")?;
    Ok((m, n, k))
}

/// `embedding`'s rules: `ids` u32 `[T]`, `table [Vs, H]`, `y` f32 `[T, H]`. Returns `(Vs, H, T)`.
pub fn embedding<B: Backend>(ids: &Tensor<B>, table: &Tensor<B>, y: &Tensor<B>) -> Result<(usize, usize, usize), BackendError> {
    let [vs, h] = <[usize; 2]>::try_from(table.shape()).map_err(|_| shape_err(format!("embedding: table must be 2-D, got {:?}", table.shape())))?;
    let t = ids.numel();
    if ids.dtype() != DType::U32 || y.shape() != [t, h] {
        return Err(shape_err(format!("embedding: ids {:?} {} into y {:?} from a table {:?}", ids.shape(), ids.dtype(), y.shape(), table.shape())));
    }
    f32_activation(y, "embedding y")?;
    Ok((vs, h, t))
}

/// An f32 activation (for backends whose activations are f32), else [`BackendError::DType`].
pub fn f32_activation<B: Backend>(t: &Tensor<B>, op: &'static str) -> Result<(), BackendError> {
    if t.dtype() == DType::F32 { Ok(()) } else { Err(BackendError::DType { op, expected: "f32", got: t.dtype() }) }
}

/// The argument rules of the [`Collective`](super::Collective) calls that one member can check
/// alone (its peers' agreement is the backend's to compare where it can see them). Each returns
/// the detail of a [`CommError::InvalidArgument`](super::CommError::InvalidArgument); `me` is
/// the caller's place in a group of `n`.
pub mod collective {
    use super::super::{Backend, DType, Tensor};

    fn has_rows<B: Backend>(what: &str, t: &Tensor<B>) -> Result<(), String> {
        if t.shape().is_empty() {
            return Err(format!("{what} is a scalar; collectives move rows (the first dimension)"));
        }
        Ok(())
    }

    /// `counts` has one entry per member; returns their sum.
    fn counts_len(what: &str, counts: &[usize], n: usize) -> Result<usize, String> {
        if counts.len() != n {
            return Err(format!("{what} has {} entries for a group of {n}", counts.len()));
        }
        counts.iter().try_fold(0usize, |a, &c| a.checked_add(c)).ok_or_else(|| format!("{what} {counts:?} overflows"))
    }

    /// `a` and `b` have the same dtype and row shape (all dims but the first).
    fn same_rows<B: Backend>(a_what: &str, a: &Tensor<B>, b_what: &str, b: &Tensor<B>) -> Result<(), String> {
        if a.dtype() != b.dtype() {
            return Err(format!("{a_what} is {} but {b_what} is {}", a.dtype(), b.dtype()));
        }
        if a.shape().get(1..) != b.shape().get(1..) {
            return Err(format!("{a_what} {:?} and {b_what} {:?} have different rows", a.shape(), b.shape()));
        }
        Ok(())
    }

    fn rows<B: Backend>(what: &str, t: &Tensor<B>, want: usize, why: &str) -> Result<(), String> {
        if t.rows() != want {
            return Err(format!("{what} {:?} has {} rows, expected {want} ({why})", t.shape(), t.rows()));
        }
        Ok(())
    }

    /// `all_reduce_sum`: f32 or u32.
    pub fn all_reduce<B: Backend>(t: &Tensor<B>) -> Result<(), String> {
        match t.dtype() {
            DType::F32 | DType::U32 => Ok(()),
            other => Err(format!("all_reduce_sum sums f32 or u32, got {other}")),
        }
    }

    /// `all_gather`: `mine [counts[me], ..]` into `out [sum(counts), ..]`, same rows.
    pub fn all_gather<B: Backend>(mine: &Tensor<B>, counts: &[usize], out: &Tensor<B>, me: usize, n: usize) -> Result<(), String> {
        let total = counts_len("counts", counts, n)?;
        has_rows("mine", mine)?;
        has_rows("out", out)?;
        same_rows("mine", mine, "out", out)?;
        rows("mine", mine, counts[me], "counts[me]")?;
        rows("out", out, total, "sum(counts)")
    }

    /// `reduce_scatter_sum`: f32 `all [sum(counts), ..]` into `out [counts[me], ..]`.
    pub fn reduce_scatter<B: Backend>(all: &Tensor<B>, counts: &[usize], out: &Tensor<B>, me: usize, n: usize) -> Result<(), String> {
        let total = counts_len("counts", counts, n)?;
        has_rows("all", all)?;
        has_rows("out", out)?;
        if all.dtype() != DType::F32 {
            return Err(format!("reduce_scatter_sum sums f32, got {}", all.dtype()));
        }
        same_rows("all", all, "out", out)?;
        rows("all", all, total, "sum(counts)")?;
        rows("out", out, counts[me], "counts[me]")
    }

    /// `all_to_all`: `send [sum(send_counts), ..]` into `out [sum(recv_counts), ..]`.
    pub fn all_to_all<B: Backend>(send: &Tensor<B>, send_counts: &[usize], recv_counts: &[usize], out: &Tensor<B>, n: usize) -> Result<(), String> {
        let sent = counts_len("send_counts", send_counts, n)?;
        let received = counts_len("recv_counts", recv_counts, n)?;
        has_rows("send", send)?;
        has_rows("out", out)?;
        same_rows("send", send, "out", out)?;
        rows("send", send, sent, "sum(send_counts)")?;
        rows("out", out, received, "sum(recv_counts)")
    }

    /// `broadcast`: the root is a member.
    pub fn broadcast(root: usize, n: usize) -> Result<(), String> {
        if root >= n {
            return Err(format!("root {root} is not a member of a group of {n}"));
        }
        Ok(())
    }
}
