//! The parallel layout: vLLM's `--data-parallel-size`, `--tensor-parallel-size`,
//! `--pipeline-parallel-size`, `--enable-expert-parallel`, plus the fine-grained sizes.

use super::{AdditionalConfig, Component, ConfigError, FinegrainedTpConfig};

/// A validated parallel layout. Construct with [`ParallelConfig::new`]; every rule is checked
/// there, before any model is read or any weight loaded.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ParallelConfig {
    pub data_parallel_size: usize,
    pub tensor_parallel_size: usize,
    pub pipeline_parallel_size: usize,
    pub enable_expert_parallel: bool,
    pub finegrained_tp: FinegrainedTpConfig,
}

/// The most ranks a layout may have: far beyond any deployment (DeepSeek-R1 decode runs on 32
/// to a few hundred), and small enough that every per-rank table and product of sizes fits.
pub const MAX_WORLD_SIZE: usize = 1 << 20;

impl ParallelConfig {
    /// Validates the layout.
    ///
    /// # Errors
    /// [`ConfigError::BadParallelSize`] for a zero DP/TP/PP size;
    /// [`ConfigError::SizeExceedsDp`] and [`ConfigError::SizeDoesNotDivide`] for a component size
    /// that cannot form groups out of the data-parallel ranks. (Sizes < 1 and non-integers are
    /// rejected while parsing, [`FinegrainedTpConfig::from_map`].)
    pub fn new(
        data_parallel_size: usize,
        tensor_parallel_size: usize,
        pipeline_parallel_size: usize,
        enable_expert_parallel: bool,
        finegrained_tp: FinegrainedTpConfig,
    ) -> Result<Self, ConfigError> {
        for (flag, value) in [
            ("data-parallel-size", data_parallel_size),
            ("tensor-parallel-size", tensor_parallel_size),
            ("pipeline-parallel-size", pipeline_parallel_size),
        ] {
            if value == 0 {
                return Err(ConfigError::BadParallelSize { flag, value });
            }
        }
        let (dp, tp, pp) = (data_parallel_size, tensor_parallel_size, pipeline_parallel_size);
        if dp.checked_mul(tp).and_then(|n| n.checked_mul(pp)).is_none_or(|n| n > MAX_WORLD_SIZE) {
            return Err(ConfigError::WorldTooLarge { dp, tp, pp, max: MAX_WORLD_SIZE });
        }
        for c in Component::ALL {
            let Some(size) = finegrained_tp.get(c) else { continue };
            let key = c.config_key();
            if size == 0 {
                return Err(ConfigError::SizeTooSmall { component: c, key, size: 0 });
            }
            if size > dp {
                return Err(ConfigError::SizeExceedsDp { component: c, key, size, dp });
            }
            if !dp.is_multiple_of(size) {
                return Err(ConfigError::SizeDoesNotDivide { component: c, key, size, dp });
            }
        }
        Ok(Self {
            data_parallel_size,
            tensor_parallel_size,
            pipeline_parallel_size,
            enable_expert_parallel,
            finegrained_tp,
        })
    }

    /// The layouts the engine runs: any DP × TP with fine-grained sizes, pipeline stages not
    /// (yet). `finetp plan`, `run` and `bench` all check it, so they agree on what is accepted;
    /// the planner itself lays out PP > 1 too.
    ///
    /// # Errors
    /// [`ConfigError::PipelineParallelUnsupported`] for `--pipeline-parallel-size` > 1.
    pub fn check_runnable(&self) -> Result<(), ConfigError> {
        if self.pipeline_parallel_size > 1 {
            return Err(ConfigError::PipelineParallelUnsupported { pp: self.pipeline_parallel_size });
        }
        Ok(())
    }

    /// Convenience for the common case: pure DP (TP = PP = 1) with the given additional config.
    pub fn data_parallel(dp: usize, additional: &AdditionalConfig) -> Result<Self, ConfigError> {
        Self::new(dp, 1, 1, false, additional.finegrained_tp)
    }

    /// Total ranks: DP × PP × TP (at most [`MAX_WORLD_SIZE`], checked when built).
    pub fn world_size(&self) -> usize {
        self.data_parallel_size * self.pipeline_parallel_size * self.tensor_parallel_size
    }

    /// Group size `c` runs with (1 = replicated).
    pub fn size(&self, c: Component) -> usize {
        self.finegrained_tp.size(c)
    }

    /// Expert-parallel size: the whole world when `--enable-expert-parallel`, as in vLLM
    /// (EP = DP × TP), else 1 (experts replicated or TP-sharded).
    pub fn expert_parallel_size(&self) -> usize {
        if self.enable_expert_parallel { self.data_parallel_size * self.tensor_parallel_size } else { 1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fg(c: Component, s: usize) -> FinegrainedTpConfig {
        let mut f = FinegrainedTpConfig::default();
        f.set(c, Some(s));
        f
    }

    #[test]
    fn each_rule_has_its_error() {
        assert_eq!(
            ParallelConfig::new(0, 1, 1, false, Default::default()).unwrap_err(),
            ConfigError::BadParallelSize { flag: "data-parallel-size", value: 0 }
        );
        let e = ParallelConfig::new(4, 1, 1, false, fg(Component::OProj, 8)).unwrap_err();
        assert_eq!(e, ConfigError::SizeExceedsDp { component: Component::OProj, key: "oproj_tensor_parallel_size", size: 8, dp: 4 });
        assert!(e.to_string().contains("oproj_tensor_parallel_size = 8 exceeds --data-parallel-size 4"));
        let e = ParallelConfig::new(12, 1, 1, false, fg(Component::Mlp, 8)).unwrap_err();
        assert!(matches!(e, ConfigError::SizeDoesNotDivide { size: 8, dp: 12, .. }));
        assert!(ParallelConfig::new(12, 1, 1, false, fg(Component::Mlp, 6)).is_ok());
    }

    #[test]
    fn expert_parallel_spans_the_world() {
        let p = ParallelConfig::new(16, 2, 1, true, Default::default()).unwrap();
        assert_eq!(p.world_size(), 32);
        assert_eq!(p.expert_parallel_size(), 32);
    }
}
