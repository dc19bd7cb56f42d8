//! The shape rules of the contract's calls that need no device data, written once for every
//! backend (each still checks dtypes and whatever it can only see in its own buffers).

use super::{Backend, BackendError, Tensor};

/// `copy_block`'s rules: the same dtype on both sides, and the block inside both tensors.
#[allow(clippy::too_many_arguments)]
pub fn copy_block<B: Backend>(
    src: &Tensor<B>,
    src_row: usize,
    src_col: usize,
    dst: &Tensor<B>,
    dst_row: usize,
    dst_col: usize,
    rows: usize,
    cols: usize,
) -> Result<(), BackendError> {
    if src.dtype() != dst.dtype() {
        return Err(BackendError::Shape(format!("copy_block: dtype {} into {}", src.dtype(), dst.dtype())));
    }
    let (sw, dw) = (src.row_len(), dst.row_len());
    let fits = |row: usize, col: usize, t_rows: usize, width: usize| {
        row.checked_add(rows).is_some_and(|r| r <= t_rows) && col.checked_add(cols).is_some_and(|c| c <= width)
    };
    if !fits(src_row, src_col, src.rows(), sw) || !fits(dst_row, dst_col, dst.rows(), dw) {
        return Err(BackendError::Shape(format!(
            "copy_block: {rows}x{cols} block from ({src_row},{src_col}) of {:?} to ({dst_row},{dst_col}) of {:?} is out of bounds",
            src.shape(),
            dst.shape()
        )));
    }
    Ok(())
}

/// `[S, L, n, d]` of a KV-cache tensor (`what` names it in the error).
pub fn cache_dims<B: Backend>(c: &Tensor<B>, what: &str) -> Result<[usize; 4], BackendError> {
    c.shape().try_into().map_err(|_| BackendError::Shape(format!("{what} must be [slots, rows, heads, dim], got {:?}", c.shape())))
}

/// `kv_cache_write`'s rules: `x [T, n, d]` rows for a cache `[S, L, n, d]`, and `T` slots and
/// positions. Returns the cache's dims.
pub fn kv_cache_write<B: Backend>(x: &Tensor<B>, cache: &Tensor<B>, slots: &Tensor<B>, positions: &Tensor<B>) -> Result<[usize; 4], BackendError> {
    let dims = cache_dims(cache, "kv_cache_write: cache")?;
    let [_, _, n, d] = dims;
    let t = x.rows();
    if x.shape() != [t, n, d] {
        return Err(BackendError::Shape(format!("kv_cache_write: rows {:?} for a cache {:?}", x.shape(), cache.shape())));
    }
    rows_of("kv_cache_write", slots, positions, t)?;
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
    /// Cache slots and rows per slot.
    pub slots: usize,
    pub len: usize,
}

/// `kv_cache_attention`'s rules: `q [T, nh, dk]`, caches `[S, L, nkv, dk]` / `[S, L, nkv, dv]`,
/// `nh % nkv == 0`, `y [T, nh, dv]`, and `T` slots and positions.
pub fn kv_cache_attention<B: Backend>(
    q: &Tensor<B>,
    k: &Tensor<B>,
    v: &Tensor<B>,
    slots: &Tensor<B>,
    positions: &Tensor<B>,
    y: &Tensor<B>,
) -> Result<AttentionDims, BackendError> {
    let bad = |why: &str| BackendError::Shape(format!("kv_cache_attention: q {:?}, k {:?}, v {:?}, y {:?}: {why}", q.shape(), k.shape(), v.shape(), y.shape()));
    let [t, nh, dk] = *q.shape() else {
        return Err(bad("q must be [T, heads, dk]"));
    };
    let [s, l, nkv, dk2] = cache_dims(k, "kv_cache_attention: k cache")?;
    let [s2, l2, nkv2, dv] = cache_dims(v, "kv_cache_attention: v cache")?;
    if dk != dk2 || (s, l, nkv) != (s2, l2, nkv2) {
        return Err(bad("k and v caches do not match q"));
    }
    if nkv == 0 || !nh.is_multiple_of(nkv) {
        return Err(bad("query heads must be a multiple of kv heads"));
    }
    if y.shape() != [t, nh, dv] {
        return Err(bad("y must be [T, heads, dv]"));
    }
    rows_of("kv_cache_attention", slots, positions, t)?;
    Ok(AttentionDims { t, heads: nh, kv_heads: nkv, dk, dv, slots: s, len: l })
}

/// One slot and one position per row.
fn rows_of<B: Backend>(op: &str, slots: &Tensor<B>, positions: &Tensor<B>, t: usize) -> Result<(), BackendError> {
    if slots.numel() != t || positions.numel() != t {
        return Err(BackendError::Shape(format!("{op}: {} slots and {} positions for {t} rows", slots.numel(), positions.numel())));
    }
    Ok(())
}
