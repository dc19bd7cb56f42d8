//! Human-readable tables for [`Estimate`] and [`AutoChoice`].

use std::fmt;

use super::{AutoChoice, CollectiveCost, Estimate};
use finetp_core::memory::gib;

impl fmt::Display for Estimate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Decode-step estimate per rank: profile {}, batch {} per rank (net: + = slower)",
            self.profile, self.batch_per_rank
        )?;
        writeln!(
            f,
            "{:<10} {:>5} {:>14} {:>14} {:>14} {:>10} {:>12}",
            "component", "size", "mem saved GiB", "read saved ms", "comm added ms", "net ms", "calls/step"
        )?;
        for r in &self.rows {
            writeln!(
                f,
                "{:<10} {:>5} {:>14.3} {:>14.3} {:>14.3} {:>+10.3} {:>12}",
                r.component.name(),
                r.size,
                gib(r.memory_saved_bytes),
                r.read_time_saved_s * 1e3,
                r.comm_time_added_s * 1e3,
                r.net_tpot_delta_s * 1e3,
                r.collectives_per_step
            )?;
        }
        writeln!(
            f,
            "{:<10} {:>5} {:>14.3} {:>14} {:>14} {:>+10.3}",
            "total",
            "",
            gib(self.memory_saved_bytes()),
            "",
            "",
            self.net_tpot_delta_s() * 1e3
        )?;
        writeln!(
            f,
            "weights per rank: {:.3} GiB -> {:.3} GiB",
            gib(self.baseline_weight_bytes_per_rank as i64),
            gib(self.weight_bytes_per_rank as i64)
        )?;
        let mut header = false;
        for r in &self.rows {
            for (sign, c) in r.collectives.iter().map(|c| ('+', c)) {
                if !header {
                    writeln!(f, "collectives per step (+ added):")?;
                    header = true;
                }
                writeln!(f, "  {sign} {:<9} {}", r.component.name(), describe(c))?;
            }
        }
        Ok(())
    }
}

fn describe(c: &CollectiveCost) -> String {
    format!(
        "{}x {} of {} over {} ranks{}: {} buffer, {} sent per rank, {:.3} ms",
        c.calls_per_step,
        c.kind.name(),
        c.payload,
        c.group_size,
        if c.spans_nodes { " (across nodes)" } else { "" },
        bytes(c.buffer_bytes),
        bytes(c.bytes_per_rank),
        c.time_s * 1e3
    )
}

/// Bytes with a binary unit, for tables.
fn bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{b} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

impl fmt::Display for AutoChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.memory_budget_bytes {
            Some(b) => writeln!(
                f,
                "Chosen sizes (least TPOT within {:.3} GiB of weights per rank): {:.3} GiB per rank",
                gib(b as i64),
                gib(self.weight_bytes_per_rank as i64)
            )?,
            None => writeln!(
                f,
                "Chosen sizes (least TPOT, no memory budget): {:.3} GiB of weights per rank",
                gib(self.weight_bytes_per_rank as i64)
            )?,
        }
        writeln!(f, "--additional-config '{}'", self.config.to_additional_config_json())?;
        write!(f, "{}", self.estimate)
    }
}
