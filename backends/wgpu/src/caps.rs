//! What the kernels may rely on: the adapter's limits and the features this backend was granted.

/// What the kernels may rely on, from the adapter's limits and the features granted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Caps {
    /// Largest storage binding, in bytes (a multiple of 4).
    pub max_binding: u64,
    /// Alignment of a storage binding's offset.
    pub offset_align: u64,
    /// Largest buffer.
    pub max_buffer: u64,
    /// Workgroups per dispatch dimension.
    pub max_groups: u32,
    /// Threads per workgroup of the 1-D kernels.
    pub wg: u32,
    pub shader_f16: bool,
    pub shader_f64: bool,
}
