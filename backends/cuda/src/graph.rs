//! `graph` mode as a real CUDA graph: the decode step's launches, copies and collectives
//! captured once (`cuStreamBeginCapture` … `End`, relaxed mode so allocations may happen
//! inside) and replayed with `cuGraphLaunch`.
//!
//! - **One GPU per rank (NCCL).** Each rank captures its own stream; NCCL's kernels are
//!   captured like any other (NCCL ≥ 2.9).
//! - **The single-GPU path.** The ranks' streams exchange data through events (`local.rs`), and
//!   a stream waiting on an event of another capture would break both, so all ranks on the GPU
//!   share one capture, driven by member 0 of the widest group (all of them): it begins the
//!   capture and records a *fork* event every other rank's stream waits on (which puts that
//!   stream into the capture); at the end each rank records a *join* event that member 0's
//!   stream waits on, and member 0 ends the capture. Member 0's graph then holds every rank's
//!   work. On replay every rank arrives (its inputs written), member 0 launches the graph and
//!   records a *replayed* event, and every other rank's stream waits on it before reading its
//!   outputs. Each rank arrives with an event after its own queued work, which member 0's
//!   stream waits on before the launch.

use std::sync::{Arc, PoisonError};

use cudarc::driver::sys::{self as cu};
use finetp_core::backend::{BackendError, CapturedGraph, GroupSpec, ReplayError};

use crate::CudaBackend;
use crate::buffer::Alloc;
use crate::placement::Placement;
use crate::local::{Event, LocalHub, Post, wait_for};
use crate::runtime::driver_err;

fn check(what: &str, r: cu::CUresult) -> Result<(), BackendError> {
    r.result().map_err(|e| driver_err(what, e))
}

/// The hub every rank on this GPU belongs to, and this rank's place in it (`None`: the rank
/// is alone on its GPU).
fn capture_world(be: &CudaBackend) -> Result<Option<(Arc<LocalHub>, GroupSpec)>, BackendError> {
    let Placement::SingleGpu { ranks } = be.placement else { return Ok(None) };
    let hubs = be.hubs.lock().unwrap_or_else(PoisonError::into_inner);
    let Some((hub, me)) = hubs.iter().max_by_key(|(h, _)| h.size()).cloned() else {
        return Ok(None);
    };
    if hub.size() != ranks {
        return Err(BackendError::Unsupported(format!("no group spans all {ranks} ranks on this GPU, so their streams cannot share one capture")));
    }
    let spec = GroupSpec::named("cuda.capture", (0..ranks).collect(), me, std::time::Duration::from_secs(60));
    Ok(Some((hub, spec)))
}

fn sync_err(e: finetp_core::backend::CommError) -> BackendError {
    BackendError::device("CUDA graph capture (single-GPU ranks)", e.to_string())
}

pub(crate) fn begin(be: &CudaBackend) -> Result<(), BackendError> {
    if be.capturing() {
        return Err(BackendError::Unsupported("a capture is already running on this stream".into()));
    }
    be.sync()?;
    let world = capture_world(be)?;
    let mode = cu::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED;
    let Some((hub, spec)) = &world else {
        // SAFETY: this rank's idle stream.
        check("cuStreamBeginCapture", unsafe { cu::cuStreamBeginCapture_v2(be.stream(), mode) })?;
        be.shared.state().capture = Some((0, Vec::new()));
        return Ok(());
    };
    hub.exchange(spec, "begin_capture", Post::default()).map_err(sync_err)?;
    let fork = Event::new(be)?;
    let leader = spec.rank == 0;
    let joined = (|| {
        if leader {
            // SAFETY: as above.
            check("cuStreamBeginCapture", unsafe { cu::cuStreamBeginCapture_v2(be.stream(), mode) })?;
            if let Err(e) = fork.record(be) {
                abandon(be);
                return Err(e);
            }
        }
        let posts = hub.exchange(spec, "begin_capture", Post { event: fork.addr(), ..Post::default() }).map_err(sync_err)?;
        if !leader {
            wait_for(be, posts[0].event)?;
        }
        Ok(())
    })();
    if let Err(e) = joined {
        if leader {
            abandon(be);
        }
        return Err(e);
    }
    // Member 0's fork event must outlive the waits: every member keeps its own until here.
    be.shared.state().capture = Some((0, Vec::new()));
    hub.exchange(spec, "begin_capture", Post::default()).map_err(sync_err)?;
    Ok(())
}

/// Ends and drops a capture that failed on the way (so the stream is usable again).
fn abandon(be: &CudaBackend) {
    let mut graph: cu::CUgraph = std::ptr::null_mut();
    // SAFETY: this rank's stream, capturing; the partial graph is destroyed at once.
    unsafe {
        cu::cuStreamEndCapture(be.stream(), &mut graph);
        if !graph.is_null() {
            cu::cuGraphDestroy(graph);
        }
    }
}

pub(crate) fn end(be: &CudaBackend) -> Result<Box<dyn CapturedGraph>, BackendError> {
    be.bind()?;
    let (ops, keep) = be.shared.state().capture.take().ok_or_else(|| BackendError::Unsupported("end_capture without begin_capture".into()))?;
    let r = finish(be, ops, keep.clone());
    if r.is_err() {
        // Nothing will replay: what the capture kept goes back at the next sync point.
        be.shared.state().deferred.extend(keep);
    }
    r
}

fn finish(be: &CudaBackend, ops: usize, keep: Vec<Alloc>) -> Result<Box<dyn CapturedGraph>, BackendError> {
    let world = capture_world(be).ok().flatten();
    let leader = world.as_ref().is_none_or(|(_, s)| s.rank == 0);
    // Lives to the end: member 0's stream waits on it after the exchange below.
    let join = world.as_ref().map(|_| Event::new(be)).transpose()?;
    let mut joined: Result<(), BackendError> = Ok(());
    if let (Some((hub, spec)), Some(join)) = (&world, &join) {
        joined = (|| {
            join.record(be)?;
            let posts = hub.exchange(spec, "end_capture", Post { event: join.addr(), ..Post::default() }).map_err(sync_err)?;
            if leader {
                for p in &posts[1..] {
                    wait_for(be, p.event)?;
                }
            }
            Ok(())
        })();
    }
    // Member 0 ends its capture whatever happened above, so its stream is usable again.
    let mut made = None;
    if leader {
        let mut graph: cu::CUgraph = std::ptr::null_mut();
        // SAFETY: ends the capture begun on this stream.
        let r = check("cuStreamEndCapture", unsafe { cu::cuStreamEndCapture(be.stream(), &mut graph) });
        let mut exec: cu::CUgraphExec = std::ptr::null_mut();
        let r = r.and_then(|()| check("cuGraphInstantiate", unsafe { cu::cuGraphInstantiateWithFlags(&mut exec, graph, 0) }));
        if r.is_err() && !graph.is_null() {
            // SAFETY: the graph just made, not instantiated.
            unsafe { cu::cuGraphDestroy(graph) };
        }
        made = Some(r.map(|()| (graph, exec)));
    }
    joined?;
    let graph = match &world {
        None => {
            let (graph, exec) = made.unwrap_or_else(|| Err(BackendError::Unsupported("no capture".into())))?;
            CudaGraph { be: be.clone(), graph, exec, ops, keep, world: None }
        }
        Some((hub, spec)) => {
            let ok = made.as_ref().is_none_or(Result::is_ok);
            let posts = hub.exchange(spec, "end_capture", Post { shape: vec![usize::from(ok)], ..Post::default() }).map_err(sync_err)?;
            if posts[0].shape != [1] {
                return Err(made.and_then(Result::err).unwrap_or_else(|| BackendError::device("CUDA graph capture", "member 0 could not end the shared capture")));
            }
            let (graph, exec) = match made {
                Some(r) => r?,
                None => (std::ptr::null_mut(), std::ptr::null_mut()),
            };
            CudaGraph { be: be.clone(), graph, exec, ops, keep, world: Some((hub.clone(), spec.clone(), Event::new(be)?)) }
        }
    };
    Ok(Box::new(graph))
}

/// A captured step (on the single-GPU path, only member 0 holds the graph itself).
struct CudaGraph {
    be: CudaBackend,
    graph: cu::CUgraph,
    exec: cu::CUgraphExec,
    ops: usize,
    keep: Vec<Alloc>,
    world: Option<(Arc<LocalHub>, GroupSpec, Event)>,
}

// SAFETY: graph handles are replayed on the owning rank's stream, from whichever thread owns it.
unsafe impl Send for CudaGraph {}

impl CapturedGraph for CudaGraph {
    fn ops(&self) -> usize {
        self.ops
    }

    unsafe fn replay(&mut self) -> Result<(), ReplayError> {
        self.be.bind()?;
        // A replay runs the captured index kernels again: the next sync reads their flag.
        self.be.shared.err_armed.store(true, std::sync::atomic::Ordering::Release);
        let launch = |be: &CudaBackend, exec| check("cuGraphLaunch", unsafe { cu::cuGraphLaunch(exec, be.stream()) });
        let Some((hub, spec, replayed)) = &self.world else {
            return Ok(launch(&self.be, self.exec)?);
        };
        let comm = |e: finetp_core::backend::CommError| ReplayError::Comm(e);
        // Every rank arrives with an event after the work it queued (its inputs written), which
        // member 0's stream waits on before launching; member 0's own event is unused here.
        if spec.rank != 0 {
            replayed.record(&self.be)?;
        }
        let arrived = hub.exchange(spec, "replay", Post { event: replayed.addr(), ..Post::default() }).map_err(comm)?;
        if spec.rank == 0 {
            for p in &arrived[1..] {
                wait_for(&self.be, p.event)?;
            }
            launch(&self.be, self.exec)?;
            replayed.record(&self.be)?;
        }
        let posts = hub.exchange(spec, "replay", Post { event: replayed.addr(), ..Post::default() }).map_err(comm)?;
        if spec.rank != 0 {
            wait_for(&self.be, posts[0].event)?;
        }
        // Member 0 re-records `replayed` on the next replay only after this one's waits.
        hub.exchange(spec, "replay", Post::default()).map_err(comm)?;
        Ok(())
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        let _ = self.be.bind();
        let _ = self.be.shared.stream.synchronize();
        // SAFETY: made by `end`, destroyed once, after the stream is idle.
        unsafe {
            if !self.exec.is_null() {
                cu::cuGraphExecDestroy(self.exec);
            }
            if !self.graph.is_null() {
                cu::cuGraphDestroy(self.graph);
            }
        }
        for a in self.keep.drain(..) {
            self.be.shared.release(a);
        }
    }
}
