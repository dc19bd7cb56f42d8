//! The single-GPU path's collectives: several ranks on one GPU, each with its own stream and
//! buffers (NCCL refuses two ranks on one device), exchanging rows by device-to-device copies.
//!
//! A [`LocalHub`] is shared by the members of one group (through the `Rendezvous`'s in-process
//! shared object). Every collective is two host exchanges around the copies:
//! 1. each member records a *ready* event on its stream (its inputs are written) and posts its
//!    buffer addresses, counts and the event; once all have posted, each member's stream waits
//!    on every peer's ready event and then enqueues its own reads of the peers' buffers;
//! 2. each member records a *done* event after its reads and posts it; each stream waits on
//!    every peer's done event before going on, so no member overwrites or frees a buffer a
//!    peer still reads.
//!
//! Sums go in member order on every member, so all members get the same bits. A member that
//! never arrives makes the others fail with [`CommError::Timeout`] after the group's timeout;
//! one whose communicator is dropped makes them fail with [`CommError::PeerFailed`].
//!
//! Inside a capture (all ranks' streams in one capture, see `graph.rs`) the same event
//! records and waits become the graph's cross-stream edges; the host exchanges only order
//! the issuing.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

use cudarc::driver::sys::{self as cu, CUdeviceptr, CUevent};
use finetp_core::backend::{BackendError, Collective, CommError, DType, GroupSpec, Tensor, checks};

use crate::CudaBackend;
use crate::kernels::{Arg, elementwise_grid};
use crate::runtime::driver_err;

/// What a member posts for one collective.
#[derive(Debug, Clone, Default)]
pub(crate) struct Post {
    /// The call this post belongs to (set by [`LocalHub::exchange`]; members at different calls
    /// are a mismatch, not a silent pairing).
    pub op: &'static str,
    pub src: CUdeviceptr,
    pub event: usize,
    /// The member's view of the call (counts, row bytes), compared across members.
    pub shape: Vec<usize>,
    /// Extra per-member numbers (all-to-all: byte offsets of each destination's rows).
    pub offsets: Vec<usize>,
}

struct Round {
    generation: u64,
    posts: Vec<Option<Post>>,
    last: Arc<Vec<Post>>,
    /// Why the group can no longer run (a timeout, a member that left).
    broken: Option<CommError>,
}

/// The members of one single-GPU group meeting on the host.
pub(crate) struct LocalHub {
    n: usize,
    round: Mutex<Round>,
    cv: Condvar,
}

fn clone_err(e: &CommError) -> CommError {
    match e {
        CommError::Timeout { group, op, after, missing, ranks } => CommError::Timeout { group: group.clone(), op, after: *after, missing: missing.clone(), ranks: ranks.clone() },
        CommError::PeerFailed { group, op, member, global_rank } => CommError::PeerFailed { group: group.clone(), op, member: *member, global_rank: *global_rank },
        other => CommError::Transport { group: String::new(), op: "single-GPU group", detail: other.to_string() },
    }
}

impl LocalHub {
    pub(crate) fn new(n: usize) -> Self {
        Self { n, round: Mutex::new(Round { generation: 0, posts: vec![None; n], last: Arc::default(), broken: None }), cv: Condvar::new() }
    }

    pub(crate) fn size(&self) -> usize {
        self.n
    }

    /// Posts `post` as member `spec.rank` and returns every member's post once all have posted.
    pub(crate) fn exchange(&self, spec: &GroupSpec, op: &'static str, mut post: Post) -> Result<Arc<Vec<Post>>, CommError> {
        post.op = op;
        let posts = self.meet(spec, op, post)?;
        if let Some((m, p)) = posts.iter().enumerate().find(|(_, p)| p.op != op) {
            return Err(CommError::Mismatch { group: spec.name(), op, detail: format!("member {} called {op} while member {m} called {}", spec.rank, p.op) });
        }
        Ok(posts)
    }

    fn meet(&self, spec: &GroupSpec, op: &'static str, post: Post) -> Result<Arc<Vec<Post>>, CommError> {
        let mut g = self.round.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = &g.broken {
            return Err(clone_err(e));
        }
        g.posts[spec.rank] = Some(post);
        let generation = g.generation;
        if g.posts.iter().all(Option::is_some) {
            g.last = Arc::new(g.posts.iter_mut().map(|p| p.take().unwrap_or_default()).collect());
            g.generation += 1;
            self.cv.notify_all();
            return Ok(g.last.clone());
        }
        let deadline = Instant::now() + spec.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (guard, _) = self.cv.wait_timeout(g, left).unwrap_or_else(PoisonError::into_inner);
            g = guard;
            if g.generation != generation {
                return Ok(g.last.clone());
            }
            if let Some(e) = &g.broken {
                return Err(clone_err(e));
            }
            if Instant::now() >= deadline {
                let missing: Vec<usize> = (0..self.n).filter(|&m| g.posts[m].is_none()).collect();
                let ranks = missing.iter().map(|&m| spec.global_rank_of(m)).collect();
                let e = CommError::Timeout { group: spec.name(), op, after: spec.timeout, missing, ranks };
                g.broken = Some(clone_err(&e));
                self.cv.notify_all();
                return Err(e);
            }
        }
    }

    /// Member `spec.rank` has left: every later (or waiting) call fails.
    fn leave(&self, spec: &GroupSpec) {
        let mut g = self.round.lock().unwrap_or_else(PoisonError::into_inner);
        if g.broken.is_none() {
            g.broken = Some(CommError::PeerFailed { group: spec.name(), op: "collective", member: spec.rank, global_rank: spec.global_rank() });
        }
        self.cv.notify_all();
    }
}

/// An event of this rank's context, destroyed with its owner.
pub(crate) struct Event(pub CUevent);

// SAFETY: an event handle is usable from any thread with the context current.
unsafe impl Send for Event {}
unsafe impl Sync for Event {}

impl Event {
    pub(crate) fn new(be: &CudaBackend) -> Result<Self, BackendError> {
        be.bind()?;
        cudarc::driver::result::event::create(cu::CUevent_flags::CU_EVENT_DISABLE_TIMING).map(Event).map_err(|e| driver_err("cuEventCreate", e))
    }

    /// Records the event on `be`'s stream.
    pub(crate) fn record(&self, be: &CudaBackend) -> Result<(), BackendError> {
        // SAFETY: a live event and stream of one context.
        unsafe { cudarc::driver::result::event::record(self.0, be.stream()) }.map_err(|e| driver_err("cuEventRecord", e))
    }

    pub(crate) fn addr(&self) -> usize {
        self.0 as usize
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: created by `new`, destroyed once.
        let _ = unsafe { cudarc::driver::result::event::destroy(self.0) };
    }
}

/// Makes `be`'s stream wait for a peer's event (posted as an address).
pub(crate) fn wait_for(be: &CudaBackend, event: usize) -> Result<(), BackendError> {
    // SAFETY: the peer's live event (it outlives the exchange: peers destroy theirs only after
    // leaving the group).
    unsafe { cudarc::driver::result::stream::wait_event(be.stream(), event as CUevent, cu::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT) }.map_err(|e| driver_err("cuStreamWaitEvent", e))
}

/// This rank's member of a single-GPU group.
pub struct LocalGroup {
    spec: GroupSpec,
    be: CudaBackend,
    hub: Arc<LocalHub>,
    ready: Event,
    done: Event,
}

impl Drop for LocalGroup {
    fn drop(&mut self) {
        let _ = self.be.sync();
        self.hub.leave(&self.spec);
    }
}

pub(crate) fn connect(be: &CudaBackend, spec: &GroupSpec, hub: Arc<LocalHub>) -> Result<LocalGroup, CommError> {
    be.hubs.lock().unwrap_or_else(PoisonError::into_inner).push((hub.clone(), spec.rank));
    Ok(LocalGroup { spec: spec.clone(), be: be.clone(), ready: Event::new(be)?, done: Event::new(be)?, hub })
}

impl LocalGroup {
    fn bad(&self, op: &'static str, detail: String) -> CommError {
        CommError::InvalidArgument { group: self.spec.name(), op, detail }
    }

    /// The two exchanges around `reads`, which enqueues this member's reads of the peers'
    /// posts (see the module docs). Every member must post the same `shape`.
    fn run(&self, op: &'static str, mut post: Post, reads: impl FnOnce(&[Post]) -> Result<(), BackendError>) -> Result<(), CommError> {
        let me = self.spec.rank;
        self.be.bind()?;
        self.ready.record(&self.be)?;
        post.event = self.ready.addr();
        let shape = post.shape.clone();
        let posts = self.hub.exchange(&self.spec, op, post)?;
        if let Some((m, p)) = posts.iter().enumerate().find(|(_, p)| p.shape != shape) {
            return Err(CommError::Mismatch { group: self.spec.name(), op, detail: format!("member {me} called it with {shape:?}, member {m} with {:?}", p.shape) });
        }
        for (m, p) in posts.iter().enumerate() {
            if m != me {
                wait_for(&self.be, p.event)?;
            }
        }
        let r = reads(&posts);
        self.done.record(&self.be)?;
        let done = self.hub.exchange(&self.spec, op, Post { event: self.done.addr(), shape, ..Post::default() })?;
        for (m, p) in done.iter().enumerate() {
            if m != me {
                wait_for(&self.be, p.event)?;
            }
        }
        r.map_err(CommError::from)
    }

    /// `dst += src` over `n` elements of `dt` (f32 or u32).
    fn add(&self, dst: CUdeviceptr, src: CUdeviceptr, n: usize, dt: DType) -> Result<(), BackendError> {
        let k = if dt == DType::U32 { "finetp_add_u32" } else { "finetp_add_f32" };
        self.be.launch(k, elementwise_grid(n), 256, &[Arg::Ptr(dst), Arg::Ptr(src), Arg::U64(n as u64)])
    }
}

fn sum_dtype(t: &Tensor<CudaBackend>, op: &'static str) -> Result<(), BackendError> {
    match t.dtype() {
        DType::F32 | DType::U32 => Ok(()),
        got => Err(BackendError::DType { op, expected: "f32 or u32", got }),
    }
}

impl Collective<CudaBackend> for LocalGroup {
    fn info(&self) -> &GroupSpec {
        &self.spec
    }

    fn all_reduce_sum(&self, t: &mut Tensor<CudaBackend>) -> Result<(), CommError> {
        sum_dtype(t, "all_reduce_sum")?;
        let (n, bytes, dt) = (t.numel(), t.buffer().len(), t.dtype());
        let sum = self.be.empty(t.shape(), dt)?;
        let (mine, acc) = (t.buffer().device_ptr(), sum.buffer().device_ptr());
        self.run("all_reduce_sum", Post { src: mine, shape: vec![n, dt.size_in_bytes()], ..Post::default() }, |posts| {
            self.be.copy_d2d(acc, posts[0].src, bytes)?;
            for p in &posts[1..] {
                self.add(acc, p.src, n, dt)?;
            }
            Ok(())
        })?;
        // Every peer has read `t` (the second exchange): now it may change.
        Ok(self.be.copy_d2d(mine, acc, bytes)?)
    }

    fn all_gather(&self, mine: &Tensor<CudaBackend>, counts: &[usize], out: &mut Tensor<CudaBackend>) -> Result<(), CommError> {
        checks::collective::all_gather(mine, counts, out, self.spec.rank, self.spec.size()).map_err(|d| self.bad("all_gather", d))?;
        let row = mine.row_len() * mine.dtype().size_in_bytes();
        let dst = out.buffer().device_ptr();
        let mut shape = counts.to_vec();
        shape.push(row);
        self.run("all_gather", Post { src: mine.buffer().device_ptr(), shape, ..Post::default() }, |posts| {
            let mut at = 0;
            for (p, &c) in posts.iter().zip(counts) {
                self.be.copy_d2d(dst + at as u64, p.src, c * row)?;
                at += c * row;
            }
            Ok(())
        })
    }

    fn reduce_scatter_sum(&self, all: &Tensor<CudaBackend>, counts: &[usize], out: &mut Tensor<CudaBackend>) -> Result<(), CommError> {
        checks::collective::reduce_scatter(all, counts, out, self.spec.rank, self.spec.size()).map_err(|d| self.bad("reduce_scatter_sum", d))?;
        let me = self.spec.rank;
        let row = all.row_len();
        let off = counts[..me].iter().sum::<usize>() * row * 4;
        let (n, dst) = (counts[me] * row, out.buffer().device_ptr());
        let mut shape = counts.to_vec();
        shape.push(row);
        self.run("reduce_scatter_sum", Post { src: all.buffer().device_ptr(), shape, ..Post::default() }, |posts| {
            self.be.copy_d2d(dst, posts[0].src + off as u64, n * 4)?;
            for p in &posts[1..] {
                if n > 0 {
                    self.add(dst, p.src + off as u64, n, DType::F32)?;
                }
            }
            Ok(())
        })
    }

    fn all_to_all(&self, send: &Tensor<CudaBackend>, send_counts: &[usize], recv_counts: &[usize], out: &mut Tensor<CudaBackend>) -> Result<(), CommError> {
        checks::collective::all_to_all(send, send_counts, recv_counts, out, self.spec.size()).map_err(|d| self.bad("all_to_all", d))?;
        let row = send.row_len() * send.dtype().size_in_bytes();
        let me = self.spec.rank;
        let offsets: Vec<usize> = send_counts.iter().scan(0, |acc, &c| Some(std::mem::replace(acc, *acc + c * row))).collect();
        let dst = out.buffer().device_ptr();
        // Each member posts how many rows it sends to every member; a receiver checks them.
        let mut post = Post { src: send.buffer().device_ptr(), shape: vec![row], offsets, ..Post::default() };
        post.offsets.extend(send_counts);
        let size = self.spec.size();
        self.run("all_to_all", post, |posts| {
            let mut at = 0;
            for (j, p) in posts.iter().enumerate() {
                let sent = p.offsets[size + me];
                if sent != recv_counts[j] {
                    return Err(BackendError::Shape(format!("all_to_all: member {j} sends {sent} rows to member {me}, which expects {}", recv_counts[j])));
                }
                self.be.copy_d2d(dst + at as u64, p.src + p.offsets[me] as u64, sent * row)?;
                at += sent * row;
            }
            Ok(())
        })
    }

    fn broadcast(&self, t: &mut Tensor<CudaBackend>, root: usize) -> Result<(), CommError> {
        checks::collective::broadcast(root, self.spec.size()).map_err(|d| self.bad("broadcast", d))?;
        let bytes = t.buffer().len();
        let dst = t.buffer().device_ptr();
        let me = self.spec.rank;
        self.run("broadcast", Post { src: dst, shape: vec![bytes, root], ..Post::default() }, |posts| if me == root { Ok(()) } else { self.be.copy_d2d(dst, posts[root].src, bytes) })
    }

    fn barrier(&self) -> Result<(), CommError> {
        self.run("barrier", Post::default(), |_| Ok(()))?;
        if !self.be.capturing() {
            self.be.sync()?;
        }
        Ok(())
    }
}
