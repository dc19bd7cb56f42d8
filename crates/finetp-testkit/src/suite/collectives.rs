//! Collectives on `B`'s communicators (made by `Backend::connect` from a plan's groups, through
//! the launcher): every op on 1–4 ranks with even, uneven and zero row counts against a
//! reference computed on the host (data moves exactly; sums within [`Op::Sum`]); a member
//! that never arrives, one that fails, and members that disagree end in errors, never a hang.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use finetp_core::backend::{CommError, DType, Device, GroupRole, HostTensor, Tensor};
use finetp_core::config::{FinegrainedTpConfig, ParallelConfig};
use finetp_core::plan::Plan;
use finetp_engine::{EngineError, Launcher, Rank};

use super::data::{f32s, fail, host, host_u32, u32s};
use super::{Case, Env, ensure};
use crate::Rng;
use crate::tolerance::{Op, close};

pub(super) fn cases<B: Device>() -> Vec<Case<B>> {
    vec![
        Case::new(
            "collectives_equal_the_reference_on_1_to_4_ranks_with_uneven_and_zero_rows",
            &[
                "Backend::connect",
                "Collective::info",
                "Collective::all_reduce_sum",
                "Collective::all_gather",
                "Collective::reduce_scatter_sum",
                "Collective::all_to_all",
                "Collective::broadcast",
                "Collective::barrier",
            ],
            every_op::<B>,
        ),
        Case::new("collectives_a_member_that_never_arrives_times_out", &["Collective::all_gather"], timeout::<B>),
        Case::new("collectives_a_failed_member_fails_its_peers_at_once", &["Collective::reduce_scatter_sum"], peer_failure::<B>),
        Case::new("collectives_members_that_disagree_get_errors", &["Collective::all_gather", "Collective::reduce_scatter_sum"], mismatch::<B>),
    ]
}

/// A plan of `n` DP ranks with every component at size `n` (so each group is the whole world).
pub(super) fn world(n: usize) -> Plan {
    Plan::new(&ParallelConfig::new(n, 1, 1, false, FinegrainedTpConfig::uniform(n)).expect("a valid layout"))
}

/// Member `me`'s `[rows, 3]` data of a collective (distinct per member, salt and dtype).
fn data(me: usize, rows: usize, dtype: DType, salt: u64) -> HostTensor {
    let mut r = Rng::new(salt * 31 + me as u64);
    match dtype {
        DType::U32 => host_u32(&(0..rows * 3).map(|_| r.below(1000) as u32).collect::<Vec<_>>(), &[rows, 3]),
        dt => host(&r.f32s(rows * 3), &[rows, 3], dt),
    }
}

/// `h` in the activation dtype `act` (floats rounded; ids unchanged).
fn as_act(h: HostTensor, act: DType) -> HostTensor {
    h.clone().into_dtype(act).unwrap_or(h)
}

fn vals(h: &HostTensor) -> Vec<f32> {
    h.to_f32_vec().unwrap_or_else(|| match &h.data {
        finetp_core::backend::HostData::U32(v) => v.iter().map(|&x| x as f32).collect(),
        _ => Vec::new(),
    })
}

/// Every collective on one member of a group of `n`, checked against the host reference.
fn member<B: Device>(rank: &Rank<B>, n: usize) -> Result<(), String> {
    let (be, g) = (&rank.be, &rank.groups.mlp);
    let info = g.info();
    ensure(info.size() == n && info.global_rank() == rank.rank && info.role == GroupRole::Component(finetp_core::config::Component::Mlp), || format!("info() is {info:?}"))?;
    let me = info.rank;
    let act = be.activation_dtype();
    let up = |h: &HostTensor| be.upload(h).map_err(fail("upload"));
    let f32_of = |t: &Tensor<B>| f32s(be, t);
    let sum_tol = Op::Sum.tol(act);
    let counts: Vec<usize> = (0..n).map(|i| [2, 0, 3, 1][i % 4]).collect();
    let total: usize = counts.iter().sum();
    // all_reduce_sum: f32 in member order (within Sum), u32 exactly (wrapping).
    let mut t = up(&as_act(data(me, 4, DType::F32, 1), act))?;
    g.all_reduce_sum(&mut t).map_err(fail("all_reduce_sum"))?;
    let want: Vec<f32> = (0..12).map(|i| (0..n).map(|m| vals(&as_act(data(m, 4, DType::F32, 1), act))[i]).sum()).collect();
    close(&f32_of(&t)?, &want, sum_tol * n as f32, &format!("all_reduce_sum f32 on {n}"))?;
    let mut t = up(&data(me, 4, DType::U32, 1))?;
    g.all_reduce_sum(&mut t).map_err(fail("all_reduce_sum u32"))?;
    let want: Vec<u32> = (0..12).map(|i| (0..n).map(|m| vals(&data(m, 4, DType::U32, 1))[i] as u32).fold(0u32, u32::wrapping_add)).collect();
    ensure(u32s(be, &t)? == want, || format!("all_reduce_sum u32 on {n}: wrong sums"))?;
    // all_gather: rows concatenated in member order, exactly, for floats of two widths and ids.
    for dt in [act, DType::BF16, DType::U32] {
        let mine = up(&data(me, counts[me], dt, 2))?;
        let mut out = be.zeros(&[total, 3], dt).map_err(fail("zeros"))?;
        g.all_gather(&mine, &counts, &mut out).map_err(fail("all_gather"))?;
        let want: Vec<f32> = (0..n).flat_map(|m| vals(&data(m, counts[m], dt, 2))).collect();
        let got = vals(&be.download(&out).map_err(fail("download"))?);
        close(&got, &want, 0.0, &format!("all_gather {dt} counts {counts:?}"))?;
    }
    // reduce_scatter_sum: member i gets rows offset(i).. of the sum.
    let all = up(&as_act(data(me, total, DType::F32, 3), act))?;
    let mut out = be.zeros(&[counts[me], 3], act).map_err(fail("zeros"))?;
    g.reduce_scatter_sum(&all, &counts, &mut out).map_err(fail("reduce_scatter_sum"))?;
    let first: usize = counts[..me].iter().sum();
    let want: Vec<f32> = (first * 3..(first + counts[me]) * 3)
        .map(|i| (0..n).map(|m| vals(&as_act(data(m, total, DType::F32, 3), act))[i]).sum())
        .collect();
    close(&f32_of(&out)?, &want, sum_tol * n as f32, &format!("reduce_scatter_sum counts {counts:?}"))?;
    // all_to_all: member i sends (i + j) % 3 rows to member j.
    let send: Vec<usize> = (0..n).map(|j| (me + j) % 3).collect();
    let recv: Vec<usize> = (0..n).map(|i| (i + me) % 3).collect();
    let s = up(&data(me, send.iter().sum(), act, 4))?;
    let mut out = be.zeros(&[recv.iter().sum(), 3], act).map_err(fail("zeros"))?;
    g.all_to_all(&s, &send, &recv, &mut out).map_err(fail("all_to_all"))?;
    let want: Vec<f32> = (0..n)
        .flat_map(|i| {
            let theirs: Vec<usize> = (0..n).map(|j| (i + j) % 3).collect();
            let v = vals(&data(i, theirs.iter().sum(), act, 4));
            let off: usize = theirs[..me].iter().sum();
            v[off * 3..(off + theirs[me]) * 3].to_vec()
        })
        .collect();
    close(&f32_of(&out)?, &want, 0.0, "all_to_all")?;
    // broadcast from the last member.
    let mut t = up(&data(me, 2, act, 5))?;
    g.broadcast(&mut t, n - 1).map_err(fail("broadcast"))?;
    close(&f32_of(&t)?, &vals(&data(n - 1, 2, act, 5)), 0.0, "broadcast")?;
    g.barrier().map_err(fail("barrier"))
}

fn every_op<B: Device>(_env: &Env<B>) -> Result<(), String> {
    for n in 1..=4 {
        Launcher::threads(Duration::from_secs(60))
            .run(&world(n), |rank: Rank<B>| member(&rank, n).map_err(|e| EngineError::Config(format!("rank {}: {e}", rank.rank))))
            .map_err(|e| format!("{n} ranks: {e}"))?;
    }
    Ok(())
}

/// Runs `body` on two ranks of `B` with `timeout`, and returns rank 0's own result (whatever
/// rank 1 does).
fn two_ranks<B: Device>(timeout: Duration, body: impl Fn(&Rank<B>) -> Result<(), CommError> + Sync) -> Result<Result<(), CommError>, String> {
    let seen = Mutex::new(None);
    let _ = Launcher::threads(timeout).run(&world(2), |rank: Rank<B>| {
        let r = body(&rank);
        if rank.rank == 0 {
            *seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(r);
        }
        Ok(())
    });
    seen.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner).ok_or_else(|| "rank 0 never ran (its device or groups failed)".into())
}

fn timeout<B: Device>(_env: &Env<B>) -> Result<(), String> {
    let limit = Duration::from_millis(300);
    let t0 = Instant::now();
    let r = two_ranks::<B>(limit, |rank| {
        let be = &rank.be;
        if rank.rank == 1 {
            // Never calls; stays alive well past the timeout (so its peer sees a timeout, not a
            // departure).
            std::thread::sleep(limit * 4);
            return Ok(());
        }
        let mine = be.zeros(&[1, 3], DType::F32)?;
        let mut out = be.zeros(&[2, 3], DType::F32)?;
        rank.groups.mlp.all_gather(&mine, &[1, 1], &mut out)
    })?;
    let took = t0.elapsed();
    ensure(matches!(&r, Err(CommError::Timeout { missing, .. }) if *missing == [1]), || format!("expected a timeout naming member 1, got {r:?}"))?;
    ensure(took < Duration::from_secs(10), || format!("the timeout took {took:?}"))
}

fn peer_failure<B: Device>(_env: &Env<B>) -> Result<(), String> {
    let t0 = Instant::now();
    let r = two_ranks::<B>(Duration::from_secs(60), |rank| {
        let be = &rank.be;
        if rank.rank == 1 {
            // Fails before the collective: its thread ends and its communicators go.
            return Ok(());
        }
        let all = be.zeros(&[2, 3], DType::F32)?;
        let mut out = be.zeros(&[1, 3], DType::F32)?;
        rank.groups.mlp.reduce_scatter_sum(&all, &[1, 1], &mut out)
    })?;
    let took = t0.elapsed();
    ensure(matches!(r, Err(CommError::PeerFailed { member: 1, global_rank: 1, .. })), || format!("expected member 1's failure, got {r:?}"))?;
    ensure(took < Duration::from_secs(20), || format!("the peer failure took {took:?} to be seen (the timeout is 60 s)"))
}

fn mismatch<B: Device>(_env: &Env<B>) -> Result<(), String> {
    let results = Mutex::new(Vec::new());
    let _ = Launcher::threads(Duration::from_secs(2)).run(&world(2), |rank: Rank<B>| {
        let be = &rank.be;
        let r = (|| -> Result<(), CommError> {
            if rank.rank == 0 {
                let mine = be.zeros(&[1, 3], DType::F32)?;
                let mut out = be.zeros(&[2, 3], DType::F32)?;
                rank.groups.mlp.all_gather(&mine, &[1, 1], &mut out)
            } else {
                let all = be.zeros(&[2, 3], DType::F32)?;
                let mut out = be.zeros(&[1, 3], DType::F32)?;
                rank.groups.mlp.reduce_scatter_sum(&all, &[1, 1], &mut out)
            }
        })();
        results.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(r.is_err());
        Ok(())
    });
    let results = results.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    ensure(results == [true, true], || format!("members that call different collectives must both fail (a mismatch, or a timeout where the library cannot see it): {results:?}"))
}
