//! Expert parallelism's dispatch and combine: each rank routes its own tokens, sends every
//! (token, chosen expert) row to the rank holding that expert, which runs its experts on what it
//! received and sends the outputs back; the sender sums them into its tokens, weighted. Three
//! variable-size all-to-alls on the backend's collectives over the EP group — the row counts,
//! the rows (with each row's expert id), the outputs — in which ranks with no tokens still take
//! part (zero rows both ways), so every rank makes the same calls whatever its batch.
//!
//! Placements: `x [rows, H]` replicated over nothing (each DP rank's own tokens); the
//! dispatched rows are partitioned by expert owner; the combined output `[rows, H]` is this
//! rank's, complete (`Replicated` within the rank, as the replicated-experts path gives).

use finetp_core::backend::{Collective, DType, Device, HostData, HostTensor, Tensor};
use finetp_core::decoder::ModelError;

use crate::expert::Expert;

/// The routed experts this rank holds: global ids `first..first + experts.len()`.
pub(crate) struct Held<'a, B: Device> {
    pub experts: &'a [Expert<B>],
    pub first: usize,
}

/// The routed experts' weighted sum for this rank's tokens, under expert parallelism over
/// `ep` (see the module docs). `ids`/`weights`: each token's `k` choices (global expert ids).
pub(crate) fn routed<B: Device>(held: Held<'_, B>, be: &B, ep: &dyn Collective<B>, x: &Tensor<B>, ids: &[u32], weights: &[f32], k: usize) -> Result<Tensor<B>, ModelError> {
    let (rows, h) = (x.rows(), x.row_len());
    let p = ep.info().size();
    let per_rank = held.experts.len();
    // (destination rank, token, expert, weight) for every choice, grouped by destination.
    let mut sends: Vec<(usize, usize, u32, f32)> = Vec::with_capacity(rows * k);
    for t in 0..rows {
        for j in 0..k {
            let e = ids[t * k + j];
            let dest = e as usize / per_rank;
            if dest >= p {
                return Err(ModelError::Batch(format!("moe_route picked expert {e} of {}", per_rank * p)));
            }
            sends.push((dest, t, e, weights[t * k + j]));
        }
    }
    sends.sort_by_key(|s| (s.0, s.1));
    let mut send_counts = vec![0usize; p];
    for s in &sends {
        send_counts[s.0] += 1;
    }
    // 1. How many rows each rank sends each rank.
    let ones = vec![1usize; p];
    let counts_out = be.upload(&HostTensor::u32(send_counts.iter().map(|&c| c as u32).collect(), &[p, 1])?)?;
    let mut counts_in = be.zeros(&[p, 1], DType::U32)?;
    ep.all_to_all(&counts_out, &ones, &ones, &mut counts_in)?;
    let recv_counts: Vec<usize> = u32s(be, &counts_in)?.into_iter().map(|c| c as usize).collect();
    let received: usize = recv_counts.iter().sum();
    // 2. The rows, gathered from x in send order, and each row's expert.
    let token_ids = be.upload(&HostTensor::u32(sends.iter().map(|s| s.1 as u32).collect(), &[sends.len()])?)?;
    let mut rows_out = be.zeros(&[sends.len(), h], x.dtype())?;
    be.embedding(&token_ids, x, 0, &mut rows_out)?;
    let experts_out = be.upload(&HostTensor::u32(sends.iter().map(|s| s.2).collect(), &[sends.len(), 1])?)?;
    let mut rows_in = be.zeros(&[received, h], x.dtype())?;
    let mut experts_in = be.zeros(&[received, 1], DType::U32)?;
    ep.all_to_all(&rows_out, &send_counts, &recv_counts, &mut rows_in)?;
    ep.all_to_all(&experts_out, &send_counts, &recv_counts, &mut experts_in)?;
    // 3. This rank's experts on what it received, the outputs in the order received.
    let got = u32s(be, &experts_in)?;
    let mut outputs = vec![0f32; received * h];
    for (local, expert) in held.experts.iter().enumerate() {
        let global = (held.first + local) as u32;
        let mine: Vec<u32> = (0..received as u32).filter(|&i| got[i as usize] == global).collect();
        if mine.is_empty() {
            continue;
        }
        let idx = be.upload(&HostTensor::u32(mine.clone(), &[mine.len()])?)?;
        let mut xs = be.zeros(&[mine.len(), h], x.dtype())?;
        be.embedding(&idx, &rows_in, 0, &mut xs)?;
        let y = be.download(&expert.forward(be, &xs)?)?.to_f32_vec().unwrap_or_default();
        for (n, &i) in mine.iter().enumerate() {
            outputs[i as usize * h..(i as usize + 1) * h].copy_from_slice(&y[n * h..(n + 1) * h]);
        }
    }
    if let Some(i) = got.iter().find(|&&e| (e as usize) < held.first || (e as usize) >= held.first + per_rank) {
        return Err(ModelError::Batch(format!("expert {i} was sent to a rank holding experts {}..{}", held.first, held.first + per_rank)));
    }
    // 4. The outputs back to their tokens' ranks, in the order they were sent.
    let back_out = be.upload(&HostTensor::f32(outputs, &[received, h])?.into_dtype(x.dtype())?)?;
    let mut back_in = be.zeros(&[sends.len(), h], x.dtype())?;
    ep.all_to_all(&back_out, &recv_counts, &send_counts, &mut back_in)?;
    let back = be.download(&back_in)?.to_f32_vec().unwrap_or_default();
    let mut out = vec![0f32; rows * h];
    for (n, s) in sends.iter().enumerate() {
        for c in 0..h {
            out[s.1 * h + c] += s.3 * back[n * h + c];
        }
    }
    Ok(be.upload(&HostTensor::f32(out, &[rows, h])?.into_dtype(x.dtype())?)?)
}

fn u32s<B: Device>(be: &B, t: &Tensor<B>) -> Result<Vec<u32>, ModelError> {
    match be.download(t)?.data {
        HostData::U32(v) => Ok(v),
        _ => Err(ModelError::Batch("expected u32 data".into())),
    }
}
