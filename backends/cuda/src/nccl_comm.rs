//! One NCCL communicator for one planned group, and the collectives finetp issues on it, on
//! raw device pointers and a raw stream: the layer the logging-stub test drives
//! (`tests/stub_nccl.rs`), free of the CUDA driver.
//!
//! - [`NcclComm::connect`]: member 0 calls `ncclGetUniqueId`, the `Rendezvous` carries the 128
//!   bytes to every member, each calls `ncclCommInitRank` (on the thread that will use the
//!   communicator, with its device current). Groups are connected in the plan's group order
//!   on every rank, which is what keeps NCCL's blocking inits from deadlocking.
//! - Equal counts use NCCL's own all-gather / reduce-scatter; uneven counts (tokens differ
//!   per rank) are grouped `ncclSend`/`ncclRecv` between `ncclGroupStart`/`End`, one pair per
//!   peer with rows to move, the member's own rows sent to itself (NCCL allows that), so no
//!   driver copy is needed. Reduce-scatter of uneven counts receives every member's block for
//!   this rank side by side into a staging buffer, which the caller sums.

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use finetp_core::backend::{CommError, GroupSpec, Rendezvous, broadcast_bytes};

use crate::nccl::{DataType, Nccl, NcclError, RawComm, RawStream, SUM, UNIQUE_ID_BYTES, UniqueId};

/// This rank's NCCL communicator for one group.
pub struct NcclComm {
    pub(crate) lib: &'static Nccl,
    pub(crate) raw: RawComm,
    pub(crate) spec: GroupSpec,
    /// Set by [`NcclComm::abort`]: `ncclCommAbort` frees the communicator, so it is neither
    /// used nor destroyed again.
    aborted: AtomicBool,
}

// SAFETY: an NCCL communicator may be used from any thread as long as calls on it are not
// concurrent; finetp issues a group's collectives from its rank's thread only (the
// `Collective` trait needs `Send + Sync` so the layers of that rank can share it).
unsafe impl Send for NcclComm {}
unsafe impl Sync for NcclComm {}

impl Drop for NcclComm {
    fn drop(&mut self) {
        if !self.aborted.load(Ordering::Acquire) {
            // SAFETY: made by ncclCommInitRank, not aborted, destroyed once.
            unsafe { (self.lib.api.comm_destroy)(self.raw) };
        }
    }
}

/// An NCCL failure on `spec` as a collective error.
pub(crate) fn nccl_err(spec: &GroupSpec, op: &'static str, e: NcclError) -> CommError {
    CommError::Transport { group: spec.name(), op, detail: e.to_string() }
}

/// What the moved elements are: NCCL's type and its size in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Elem {
    pub dt: DataType,
    pub bytes: usize,
}

impl Elem {
    /// Bytes, as NCCL's `ncclUint8`: what finetp moves when nothing is summed.
    pub const BYTE: Elem = Elem { dt: DataType::Uint8, bytes: 1 };
}

/// Element offsets of each member's block.
fn offsets(counts: &[usize]) -> Vec<usize> {
    counts.iter().scan(0, |acc, &n| Some(std::mem::replace(acc, *acc + n))).collect()
}

fn at(p: *const c_void, elems: usize, elem_bytes: usize) -> *const c_void {
    p.wrapping_byte_add(elems * elem_bytes)
}

impl NcclComm {
    /// Joins `spec`'s communicator (collective over the group; see the module docs).
    ///
    /// # Errors
    /// The rendezvous' errors, and NCCL's as [`CommError::Transport`].
    pub fn connect(lib: &'static Nccl, spec: &GroupSpec, rv: &dyn Rendezvous) -> Result<Self, CommError> {
        let mut id = UniqueId { internal: [0; UNIQUE_ID_BYTES] };
        if spec.rank == 0 {
            // SAFETY: writes the id struct.
            lib.check("ncclGetUniqueId", unsafe { (lib.api.get_unique_id)(&mut id) }).map_err(|e| nccl_err(spec, "connect", e))?;
        }
        let mine: Vec<u8> = id.internal.iter().map(|&c| c as u8).collect();
        let bytes = broadcast_bytes(rv, spec, 0, &mine)?;
        if bytes.len() != UNIQUE_ID_BYTES {
            return Err(CommError::Mismatch { group: spec.name(), op: "connect", detail: format!("a unique id of {} bytes, NCCL's is {UNIQUE_ID_BYTES}", bytes.len()) });
        }
        for (d, s) in id.internal.iter_mut().zip(&bytes) {
            *d = *s as _;
        }
        let mut raw: RawComm = std::ptr::null_mut();
        let (n, me) = (spec.size() as i32, spec.rank as i32);
        // SAFETY: every member passes the same id and its own rank; blocks until all have joined.
        lib.check("ncclCommInitRank", unsafe { (lib.api.comm_init_rank)(&mut raw, n, id, me) }).map_err(|e| nccl_err(spec, "connect", e))?;
        Ok(Self { lib, raw, spec: spec.clone(), aborted: AtomicBool::new(false) })
    }

    /// The group this communicator was made for.
    pub fn spec(&self) -> &GroupSpec {
        &self.spec
    }

    fn check(&self, op: &'static str, r: i32) -> Result<(), CommError> {
        self.lib.check(op, r).map_err(|e| nccl_err(&self.spec, op, e))
    }

    /// Refuses calls on a communicator aborted after an earlier failure.
    fn live(&self, op: &'static str) -> Result<(), CommError> {
        if self.aborted.load(Ordering::Acquire) {
            return Err(CommError::Transport { group: self.spec.name(), op, detail: "the NCCL communicator was aborted after an earlier timeout or error".into() });
        }
        Ok(())
    }

    /// Runs `body` between `ncclGroupStart` and `ncclGroupEnd` (the end runs on error too).
    fn grouped(&self, op: &'static str, body: impl FnOnce() -> Result<(), CommError>) -> Result<(), CommError> {
        self.live(op)?;
        // SAFETY: NCCL's group calls take no arguments.
        self.check(op, unsafe { (self.lib.api.group_start)() })?;
        let r = body();
        let end = self.check(op, unsafe { (self.lib.api.group_end)() });
        r.and(end)
    }

    /// The error NCCL recorded for this communicator in the background (`None`: none).
    pub fn async_error(&self) -> Option<String> {
        if self.aborted.load(Ordering::Acquire) {
            return Some("the communicator was aborted".into());
        }
        let mut r = 0;
        // SAFETY: writes one result code.
        let ok = unsafe { (self.lib.api.comm_get_async_error)(self.raw, &mut r) };
        (ok == 0 && r != 0 && r != 7).then(|| self.lib.check("ncclCommGetAsyncError", r).err().map_or_else(String::new, |e| e.to_string()))
    }

    /// Aborts every operation in flight on the communicator (after a timeout or an error) and
    /// frees it; later calls fail with [`CommError::Transport`].
    pub fn abort(&self) {
        if !self.aborted.swap(true, Ordering::AcqRel) {
            // SAFETY: a live communicator, aborted (and so freed) once.
            unsafe { (self.lib.api.comm_abort)(self.raw) };
        }
    }

    /// In-place sum of `count` elements over the group.
    ///
    /// # Safety
    /// `buf` is `count` elements of `dt` on this rank's device; `stream` is its stream.
    pub unsafe fn all_reduce_sum(&self, buf: *mut c_void, count: usize, dt: DataType, stream: RawStream) -> Result<(), CommError> {
        self.live("ncclAllReduce")?;
        // SAFETY: as the caller promises.
        self.check("ncclAllReduce", unsafe { (self.lib.api.all_reduce)(buf, buf, count, dt, SUM, self.raw, stream) })
    }

    /// `root`'s `count` elements into every member's `buf`.
    ///
    /// # Safety
    /// As [`Self::all_reduce_sum`].
    pub unsafe fn broadcast(&self, buf: *mut c_void, count: usize, dt: DataType, root: usize, stream: RawStream) -> Result<(), CommError> {
        self.live("ncclBroadcast")?;
        // SAFETY: as the caller promises.
        self.check("ncclBroadcast", unsafe { (self.lib.api.broadcast)(buf, buf, count, dt, root as i32, self.raw, stream) })
    }

    /// Gathers `counts[i]` elements from each member into `recv` (member order).
    ///
    /// # Safety
    /// `send` holds `counts[me]` and `recv` `sum(counts)` elements of `e`
    /// on this rank's device; `stream` is its stream.
    pub unsafe fn all_gather_v(&self, send: *const c_void, recv: *mut c_void, counts: &[usize], e: Elem, stream: RawStream) -> Result<(), CommError> {
        let me = self.spec.rank;
        if counts.iter().all(|&c| c == counts[0]) {
            self.live("ncclAllGather")?;
            // SAFETY: as the caller promises.
            return self.check("ncclAllGather", unsafe { (self.lib.api.all_gather)(send, recv, counts[0], e.dt, self.raw, stream) });
        }
        let offs = offsets(counts);
        self.grouped("all_gather (grouped send/recv)", || {
            for (peer, (&n, &off)) in counts.iter().zip(&offs).enumerate() {
                if counts[me] > 0 {
                    // SAFETY: `send` holds counts[me] elements.
                    self.check("ncclSend", unsafe { (self.lib.api.send)(send, counts[me], e.dt, peer as i32, self.raw, stream) })?;
                }
                if n > 0 {
                    // SAFETY: block `peer` of `recv` holds `n` elements.
                    self.check("ncclRecv", unsafe { (self.lib.api.recv)(at(recv, off, e.bytes).cast_mut(), n, e.dt, peer as i32, self.raw, stream) })?;
                }
            }
            Ok(())
        })
    }

    /// Reduce-scatter: member `i` gets the sum over members of block `i` of `all`. Equal counts
    /// write the sum into `out`; uneven counts write every member's block `me` into `staging`
    /// (`size × counts[me]` elements, member order) and return `false`: the caller sums it.
    ///
    /// # Safety
    /// `all` holds `sum(counts)` elements, `out` `counts[me]`, `staging` `size × counts[me]`
    /// (unused for equal counts), f32, on this rank's device; `stream` is its stream.
    pub unsafe fn reduce_scatter_v(&self, all: *const c_void, out: *mut c_void, staging: *mut c_void, counts: &[usize], stream: RawStream) -> Result<bool, CommError> {
        let me = self.spec.rank;
        if counts.iter().all(|&c| c == counts[0]) {
            self.live("ncclReduceScatter")?;
            // SAFETY: as the caller promises.
            self.check("ncclReduceScatter", unsafe { (self.lib.api.reduce_scatter)(all, out, counts[0], DataType::Float32, SUM, self.raw, stream) })?;
            return Ok(true);
        }
        let offs = offsets(counts);
        self.grouped("reduce_scatter (grouped send/recv)", || {
            for (peer, (&n, &off)) in counts.iter().zip(&offs).enumerate() {
                if n > 0 {
                    // SAFETY: block `peer` of `all`.
                    self.check("ncclSend", unsafe { (self.lib.api.send)(at(all, off, 4), n, DataType::Float32, peer as i32, self.raw, stream) })?;
                }
                if counts[me] > 0 {
                    // SAFETY: slot `peer` of `staging`.
                    self.check("ncclRecv", unsafe { (self.lib.api.recv)(at(staging, peer * counts[me], 4).cast_mut(), counts[me], DataType::Float32, peer as i32, self.raw, stream) })?;
                }
            }
            Ok(())
        })?;
        Ok(false)
    }

    /// Personalised exchange: `send_counts[j]` elements to member `j`, `recv_counts[i]` from
    /// member `i`, both in member order.
    ///
    /// # Safety
    /// `send` holds `sum(send_counts)` and `recv` `sum(recv_counts)` elements of `e` on this
    /// rank's device; `stream` is its stream.
    pub unsafe fn all_to_all_v(&self, send: *const c_void, send_counts: &[usize], recv: *mut c_void, recv_counts: &[usize], e: Elem, stream: RawStream) -> Result<(), CommError> {
        let (so, ro) = (offsets(send_counts), offsets(recv_counts));
        self.grouped("all_to_all (grouped send/recv)", || {
            for peer in 0..self.spec.size() {
                if send_counts[peer] > 0 {
                    // SAFETY: block `peer` of `send`.
                    self.check("ncclSend", unsafe { (self.lib.api.send)(at(send, so[peer], e.bytes), send_counts[peer], e.dt, peer as i32, self.raw, stream) })?;
                }
                if recv_counts[peer] > 0 {
                    // SAFETY: block `peer` of `recv`.
                    self.check("ncclRecv", unsafe { (self.lib.api.recv)(at(recv, ro[peer], e.bytes).cast_mut(), recv_counts[peer], e.dt, peer as i32, self.raw, stream) })?;
                }
            }
            Ok(())
        })
    }
}

/// The process's NCCL, loaded on the first group of more than one member on the NCCL path.
pub(crate) fn nccl() -> Result<&'static Nccl, finetp_core::backend::BackendError> {
    static LIB: std::sync::OnceLock<Result<Nccl, String>> = std::sync::OnceLock::new();
    LIB.get_or_init(|| Nccl::load().map_err(|e| e.to_string())).as_ref().map_err(|e| finetp_core::backend::BackendError::Unavailable {
        backend: "cuda",
        missing: e.clone(),
        hint: "install NCCL (`pip install nvidia-nccl-cu13` ships lib/libnccl.so.2) and put it on LD_LIBRARY_PATH, or name the file in FINETP_NCCL_LIB".into(),
    })
}
