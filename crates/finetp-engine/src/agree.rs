//! What every rank of a run agrees on before it starts: a fingerprint of its flags and
//! requests, compared across the world.

use finetp_core::backend::{CommError, Device, HostTensor};
use finetp_core::parallel::GroupSet;

use crate::{EngineConfig, EngineError, ExecMode, Request};

/// A hash of everything every rank of a run must agree on: the engine config, the static
/// capacity, the vocabulary and every request. Ranks that are processes each parse their own
/// flags and files, so a mismatch is caught here rather than as corrupt collectives.
pub(crate) fn run_fingerprint(cfg: &EngineConfig, capacity: usize, vocab: usize, requests: &[Request]) -> u64 {
    // FNV-1a over a fixed serialisation: the same on every host.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |x: u64| {
        for b in x.to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(u64::from(cfg.mode == ExecMode::Graph));
    eat(cfg.max_seq_len as u64);
    eat(cfg.max_num_batched_tokens as u64);
    eat(cfg.max_num_seqs.unwrap_or(0) as u64);
    eat(cfg.kv_blocks.unwrap_or(0) as u64);
    eat(capacity as u64);
    eat(vocab as u64);
    for r in requests {
        eat(r.id as u64);
        eat(r.max_tokens as u64);
        r.prompt.iter().for_each(|&t| eat(u64::from(t)));
        r.stop_ids.iter().for_each(|&t| eat(u64::from(t)));
        eat(u64::from(r.sampling.temperature.to_bits()) << 32 | u64::from(r.sampling.top_p.to_bits()));
        eat(u64::from(r.sampling.top_k) << 32 ^ r.sampling.seed);
        eat(r.logprobs.map_or(u64::MAX, |n| n as u64));
        eat(r.prompt_logprobs.map_or(u64::MAX, |n| n as u64));
        eat(u64::from(r.penalties.frequency.to_bits()) << 32 | u64::from(r.penalties.presence.to_bits()));
        eat(r.sample_stream.unwrap_or(u64::MAX));
    }
    h
}

/// Every rank compares its fingerprint with member 0's of its DP group and then of its TP
/// group (two broadcasts: together they link the whole world), and the run starts only if all
/// agree; it is also the start line every rank leaves together.
pub(crate) fn agree_on_the_run<B: Device>(be: &B, groups: &GroupSet<B>, fingerprint: u64) -> Result<(), EngineError> {
    for group in [&groups.dp, &groups.tp] {
        agree_in(be, &**group, fingerprint)?;
    }
    Ok(())
}

fn agree_in<B: Device>(be: &B, group: &dyn finetp_core::backend::Collective<B>, fingerprint: u64) -> Result<(), EngineError> {
    let comm = |source: CommError| EngineError::Comm { rank: group.info().global_rank(), source };
    let mine = [fingerprint as u32, (fingerprint >> 32) as u32];
    let mut t = be.upload(&HostTensor::u32(mine.to_vec(), &[2]).map_err(|e| comm(e.into()))?).map_err(|e| comm(e.into()))?;
    group.broadcast(&mut t, 0).map_err(comm)?;
    let theirs = be.download(&t).map_err(|e| comm(e.into()))?;
    if theirs.data != finetp_core::backend::HostData::U32(mine.to_vec()) {
        let g = group.info();
        return Err(EngineError::Run {
            rank: g.global_rank(),
            detail: format!("it and rank {} were started with different requests, model or flags (every rank of a run must get the same)", g.global_rank_of(0)),
        });
    }
    Ok(())
}
