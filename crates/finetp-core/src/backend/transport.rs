//! Bytes between the members of a group that live in different processes (or hosts).
//!
//! Ranks that are threads of one process share memory, and their collectives need nothing
//! else. When a group's members live in several processes (ranks started by `mpirun`), a
//! backend without a collective library of its own (the CPU backend, and wgpu through it)
//! builds its collectives on a [`HostTransport`]: point-to-point messages between members,
//! each call a complete exchange with a deadline. The launcher that started the processes
//! provides it, through the run's [`Rendezvous::transport`](super::Rendezvous::transport);
//! a backend never names MPI.

use super::{CommError, GroupSpec};

/// What a collective's messages carry besides their bytes, so that members that disagree
/// fail with [`CommError::Mismatch`] instead of reading the wrong bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Call {
    /// The collective, as in messages (`"all_gather"`).
    pub op: &'static str,
    /// What every member must agree on for this call (dtype, row shape, root…), hashed by
    /// the caller; members whose fingerprints differ see a mismatch.
    pub fingerprint: u64,
}

/// One member's side of the point-to-point traffic of its groups.
///
/// Messages between two members of one group arrive in the order they were sent (each
/// member's calls on a group are sequential), and each message is checked against the
/// receiver's [`Call`] and expected length.
pub trait HostTransport: Send + Sync {
    /// Sends `sends[k].1` to member `sends[k].0` of `spec` and receives `recvs[k].1` bytes from
    /// member `recvs[k].0`, returning the received bytes in `recvs` order. Every send is
    /// posted before any receive is waited for, so members that all call `exchange` never wait
    /// on each other in a circle. Members are positions in `spec.global_ranks`; `spec.rank` is
    /// the caller's.
    ///
    /// # Errors
    /// [`CommError::Timeout`] once `spec.timeout` has passed, naming the members whose
    /// messages never came; [`CommError::PeerFailed`] as soon as a missing member's process is
    /// known to have died; [`CommError::Mismatch`] for a message of another call or length;
    /// [`CommError::Transport`] when the transport itself fails (or the job is being ended).
    /// After an error the group is unusable: its members are out of step.
    fn exchange(&self, spec: &GroupSpec, call: Call, sends: Vec<(usize, Vec<u8>)>, recvs: &[(usize, usize)]) -> Result<Vec<Vec<u8>>, CommError>;
}

/// Every member's `mine`, of any length, on every member (in member order), over `t`: the
/// lengths first (a receive must know what it receives), then the bytes. What a rendezvous
/// across processes, and a gather of results, are made of.
///
/// # Errors
/// As [`HostTransport::exchange`].
pub fn all_gather_bytes(t: &dyn HostTransport, spec: &GroupSpec, op: &'static str, mine: &[u8]) -> Result<Vec<Vec<u8>>, CommError> {
    let others: Vec<usize> = (0..spec.size()).filter(|&m| m != spec.rank).collect();
    let call = Call { op, fingerprint: fingerprint(&op.bytes().map(u64::from).collect::<Vec<_>>()) };
    let len = (mine.len() as u64).to_le_bytes();
    let lens = t.exchange(spec, call, others.iter().map(|&m| (m, len.to_vec())).collect(), &others.iter().map(|&m| (m, 8)).collect::<Vec<_>>())?;
    let recvs: Vec<(usize, usize)> = others.iter().zip(&lens).map(|(&m, b)| (m, u64::from_le_bytes(b[..8].try_into().unwrap_or([0; 8])) as usize)).collect();
    let got = t.exchange(spec, call, others.iter().map(|&m| (m, mine.to_vec())).collect(), &recvs)?;
    let mut all = vec![Vec::new(); spec.size()];
    for (&m, bytes) in others.iter().zip(got) {
        all[m] = bytes;
    }
    all[spec.rank] = mine.to_vec();
    Ok(all)
}

/// FNV-1a over `parts`: a stable fingerprint for a [`Call`] (the same on every process and
/// host, unlike `std`'s randomly keyed hasher).
pub fn fingerprint(parts: &[u64]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Spare capacity a sender should leave after a message's bytes (`Vec::with_capacity(len +
/// TRAILER_ROOM)`): a transport may append its own trailer there without moving the payload.
pub const TRAILER_ROOM: usize = 40;

/// The fingerprint a member with bad arguments sends instead of its call's: its peers fail
/// with a [`CommError::Mismatch`] quoting the message's bytes (the member's own complaint).
pub const POISONED: u64 = u64::MAX;

/// Checks a message from member `from` of `spec` against the receiver's `call` and the
/// `len` bytes it expects.
///
/// # Errors
/// [`CommError::Mismatch`] naming the sender, its call and what differs.
pub fn check_message(spec: &GroupSpec, call: Call, from: usize, len: usize, got: Call, bytes: &[u8]) -> Result<(), CommError> {
    let who = format!("member {from} (global rank {})", spec.global_rank_of(from));
    let detail = if got.fingerprint == POISONED {
        match got.op {
            "mismatch" => format!("{who} saw its peers disagree: {}", String::from_utf8_lossy(bytes)),
            op => format!("{who} passed bad arguments to {op}: {}", String::from_utf8_lossy(bytes)),
        }
    } else if got.op != call.op {
        format!("{who} called {} where this member called {}", got.op, call.op)
    } else if got.fingerprint != call.fingerprint {
        format!("{who} called {} with other arguments (dtype, shape, counts or root)", got.op)
    } else if bytes.len() != len {
        format!("{who} sent {} bytes where {len} were expected", bytes.len())
    } else {
        return Ok(());
    };
    Err(CommError::Mismatch { group: spec.name(), op: call.op, detail })
}
