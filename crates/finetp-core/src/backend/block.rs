//! The rectangle [`Backend::copy_block`](super::Backend::copy_block) copies.

use super::{Backend, Tensor};

/// Rows `src_row..src_row + rows`, columns `src_col..src_col + cols` of the source (viewed as
/// `[rows, row_len]`), copied to `(dst_row, dst_col)` of the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub src_row: usize,
    pub src_col: usize,
    pub dst_row: usize,
    pub dst_col: usize,
    pub rows: usize,
    pub cols: usize,
}

impl Block {
    /// A block at `(src_row, src_col)` of the source into `(dst_row, dst_col)` of the destination.
    pub const fn at((src_row, src_col): (usize, usize), (dst_row, dst_col): (usize, usize), rows: usize, cols: usize) -> Self {
        Self { src_row, src_col, dst_row, dst_col, rows, cols }
    }

    /// `rows` whole rows of width `cols` from row `src_row` to row `dst_row`.
    pub const fn rows(src_row: usize, dst_row: usize, rows: usize, cols: usize) -> Self {
        Self::at((src_row, 0), (dst_row, 0), rows, cols)
    }

    /// All of `t` (into a tensor of at least its rows and row length).
    pub fn whole<B: Backend>(t: &Tensor<B>) -> Self {
        Self::rows(0, 0, t.rows(), t.row_len())
    }
}
