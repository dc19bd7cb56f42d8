//! Will a CPU run fit? Its ranks are threads of this process, so every rank's weights and KV
//! cache come out of this host's memory: checked against `MemAvailable` before any rank starts,
//! so an oversized layout is refused with the figure it needed instead of aborting on a failed
//! allocation or being killed by the OOM killer.

use anyhow::anyhow;

const GIB: f64 = (1u64 << 30) as f64;

/// `MemAvailable` of `/proc/meminfo`, in bytes; `None` where it cannot be read (not Linux).
pub fn available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Refuses `ranks` ranks of `weights` + `kv` bytes each when they exceed `available` bytes
/// (`kv` is `None` when its size overflowed).
pub fn check_fits(ranks: usize, weights: u64, kv: Option<u64>, available: u64) -> anyhow::Result<()> {
    let per_rank = kv.and_then(|k| k.checked_add(weights));
    let needed = per_rank.and_then(|p| p.checked_mul(ranks as u64));
    match needed {
        Some(n) if n <= available => Ok(()),
        _ => Err(anyhow!(
            "{ranks} CPU ranks need about {} GiB of host memory ({ranks} x ({:.3} GiB of weights + {} GiB of KV cache)), but {:.1} GiB is available: use fewer ranks, larger fine-grained TP sizes (`finetp plan --model ...` prints the per-rank memory) or a shorter --max-tokens",
            needed.map_or("more than 2^64 bytes".to_string(), |n| format!("{:.1}", n as f64 / GIB)),
            weights as f64 / GIB,
            kv.map_or("an overflowing".to_string(), |k| format!("{:.3}", k as f64 / GIB)),
            available as f64 / GIB
        )),
    }
}

/// `--memory-budget-gib` `budget` in bytes, or why it is not a budget.
pub fn budget_bytes(budget: f64) -> anyhow::Result<u64> {
    if !(budget.is_finite() && budget > 0.0) {
        return Err(anyhow!("--memory-budget-gib must be a positive number of GiB, got {budget}"));
    }
    Ok((budget * GIB) as u64)
}

/// Refuses a rank of `weights` + `kv` bytes beyond `--memory-budget-gib` `budget`.
pub fn check_budget(budget: f64, weights: u64, kv: Option<u64>) -> anyhow::Result<()> {
    budget_bytes(budget)?;
    let per_rank = kv.and_then(|k| k.checked_add(weights));
    match per_rank {
        Some(n) if n as f64 <= budget * GIB => Ok(()),
        _ => Err(anyhow!(
            "each rank needs {} ({:.3} GiB of weights + {} of KV cache), more than --memory-budget-gib {budget}: use larger fine-grained TP sizes (`finetp plan --model ...` prints the per-rank memory) or a shorter --max-tokens",
            per_rank.map_or("more than 2^64 bytes".to_string(), |n| format!("about {:.3} GiB", n as f64 / GIB)),
            weights as f64 / GIB,
            kv.map_or("more than 2^64 bytes".to_string(), |k| format!("{:.3} GiB", k as f64 / GIB)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::{check_budget, check_fits};

    #[test]
    fn a_budget_is_checked_per_rank() {
        assert!(check_budget(1.0, 1 << 29, Some(1 << 29)).is_ok());
        let e = check_budget(0.5, 1 << 29, Some(1 << 20)).unwrap_err().to_string();
        assert!(e.contains("each rank needs about 0.501 GiB (0.500 GiB of weights + 0.001 GiB of KV cache), more than --memory-budget-gib 0.5"), "{e}");
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(check_budget(bad, 0, Some(0)).unwrap_err().to_string().contains("must be a positive number"), "{bad}");
        }
        let e = check_budget(1e9, u64::MAX, Some(1)).unwrap_err().to_string();
        assert!(e.starts_with("each rank needs more than 2^64 bytes (17179869184.000 GiB of weights + 0.000 GiB of KV cache)"), "{e}");
    }

    #[test]
    fn names_what_it_needed() {
        assert!(check_fits(4, 1 << 30, Some(0), 4 << 30).is_ok());
        let e = check_fits(2000, 538_000_000, Some(1 << 20), 24 << 30).unwrap_err().to_string();
        assert!(e.contains("2000 CPU ranks need about 1004.1 GiB of host memory") && e.contains("24.0 GiB is available"), "{e}");
        assert!(check_fits(usize::MAX, u64::MAX, None, u64::MAX).unwrap_err().to_string().contains("more than 2^64 bytes"));
    }
}
