//! vLLM-style parallel flags, shared by every subcommand.

use anyhow::Context;
use clap::{Args, ValueEnum};
use finetp_core::config::{AdditionalConfig, ParallelConfig};
use finetp_engine::BackendKind;

use crate::Failure;

#[derive(Args, Debug, Clone)]
pub struct ParallelArgs {
    /// Data-parallel replicas (vLLM's --data-parallel-size).
    #[arg(long = "data-parallel-size", short = 'd', default_value_t = 1)]
    pub data_parallel_size: usize,
    /// Standard tensor-parallel size inside each replica.
    #[arg(long = "tensor-parallel-size", short = 't', default_value_t = 1)]
    pub tensor_parallel_size: usize,
    /// Pipeline stages per replica.
    #[arg(long = "pipeline-parallel-size", default_value_t = 1)]
    pub pipeline_parallel_size: usize,
    /// Spread routed experts over the whole world (EP = DP x TP).
    #[arg(long = "enable-expert-parallel")]
    pub enable_expert_parallel: bool,
    /// JSON with a "finegrained_tp_config" object, or @file.json.
    #[arg(long = "additional-config", value_name = "JSON|@FILE")]
    pub additional_config: Option<String>,
}

impl ParallelArgs {
    /// Parses and validates the layout; every failure is bad input (exit 2).
    pub fn to_config(&self) -> Result<ParallelConfig, Failure> {
        let additional = match &self.additional_config {
            Some(a) => AdditionalConfig::from_arg(a)
                .context("invalid --additional-config")
                .map_err(Failure::Input)?,
            None => AdditionalConfig::default(),
        };
        ParallelConfig::new(
            self.data_parallel_size,
            self.tensor_parallel_size,
            self.pipeline_parallel_size,
            self.enable_expert_parallel,
            additional.finegrained_tp,
        )
        .and_then(|p| p.check_runnable().map(|()| p))
        .context("invalid parallel configuration")
        .map_err(Failure::Input)
    }
}

/// `--backend`: every backend finetp knows (the CPU is always built; the others need their
/// cargo feature, and a binary without one says how to build it).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq)]
pub enum BackendArg {
    Cpu,
    Wgpu,
    Cuda,
    Ascend,
}

impl BackendArg {
    pub fn kind(self) -> BackendKind {
        match self {
            BackendArg::Cpu => BackendKind::Cpu,
            BackendArg::Wgpu => BackendKind::Wgpu,
            BackendArg::Cuda => BackendKind::Cuda,
            BackendArg::Ascend => BackendKind::Ascend,
        }
    }
}
