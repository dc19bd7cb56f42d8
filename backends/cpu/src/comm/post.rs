//! What a member posts when it arrives at a collective: its arguments, to be checked against its
//! peers', and the address of its buffer, for them to read or write.

use finetp_core::backend::DType;

/// A buffer address that crosses threads.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ptr(pub *mut u8);

// SAFETY: a `Ptr` is only dereferenced between a round's first and last barrier, while the
// member that posted it is blocked inside the same collective and keeps its buffer alive and
// unaliased by writes other than those the protocol assigns (see `xfer`).
unsafe impl Send for Ptr {}
// SAFETY: as above; `Ptr` itself is a plain address.
unsafe impl Sync for Ptr {}

/// A byte range of one member's posted buffer.
#[derive(Clone, Copy, Debug)]
pub(super) struct Src {
    pub ptr: Ptr,
    pub len: usize,
}

impl Default for Src {
    fn default() -> Self {
        Self { ptr: Ptr(std::ptr::null_mut()), len: 0 }
    }
}

/// What a member posts when it arrives: enough to check it against its peers, and its buffer.
/// Slots are reused round after round, so the vectors keep their allocations.
#[derive(Debug, Default)]
pub(super) struct Post {
    pub op: &'static str,
    pub dtype: Option<DType>,
    /// The row shape (all dims but the first) for row collectives; the whole shape for
    /// `all_reduce_sum` and `broadcast`.
    pub shape: Vec<usize>,
    /// `counts` (`send_counts` for `all_to_all`).
    pub counts: Vec<usize>,
    pub recv_counts: Vec<usize>,
    pub root: usize,
    /// Why this member's own arguments are invalid; it still arrives, so that its peers fail
    /// at once instead of timing out, and the group stays in lock-step.
    pub invalid: Option<String>,
    pub buf: Src,
}

impl Post {
    pub(super) fn reset(&mut self) {
        self.op = "";
        self.dtype = None;
        self.shape.clear();
        self.counts.clear();
        self.recv_counts.clear();
        self.root = 0;
        self.invalid = None;
        self.buf = Src::default();
    }
}
