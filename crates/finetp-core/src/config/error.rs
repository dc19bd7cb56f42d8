//! Configuration errors. Each message names the offending key or component, the value and the rule.

use super::Component;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("--additional-config is not valid JSON: {message} at line {line}, column {column}")]
    Json { message: String, line: usize, column: usize },

    #[error("cannot read --additional-config file {path}: {message}")]
    File { path: String, message: String },

    #[error("{what} must be a JSON object, got {got}")]
    NotAnObject { what: &'static str, got: String },

    #[error(
        "unknown key \"{key}\" in finegrained_tp_config{}; valid keys are: {}",
        suggestion.as_ref().map(|s| format!(" (did you mean \"{s}\"?)")).unwrap_or_default(),
        valid.join(", ")
    )]
    UnknownKey { key: String, suggestion: Option<String>, valid: Vec<&'static str> },

    #[error("{key} must be a positive integer, got {value}")]
    NotAnInteger { key: &'static str, value: String },

    #[error("{key} = {size}: a tensor-parallel size must be >= 1 (omit the key to disable fine-grained TP for {component})")]
    SizeTooSmall { component: Component, key: &'static str, size: i64 },

    #[error("{key} = {size} exceeds --data-parallel-size {dp}: the {component} group is formed from data-parallel ranks, so its size must be <= {dp}")]
    SizeExceedsDp { component: Component, key: &'static str, size: usize, dp: usize },

    #[error("{key} = {size} does not divide --data-parallel-size {dp}: the {component} groups must partition the data-parallel ranks (dp % size == 0)")]
    SizeDoesNotDivide { component: Component, key: &'static str, size: usize, dp: usize },

    #[error("--{flag} must be >= 1, got {value}")]
    BadParallelSize { flag: &'static str, value: usize },

    #[error("--data-parallel-size {dp} x --tensor-parallel-size {tp} x --pipeline-parallel-size {pp} is more than the {max} ranks finetp lays out")]
    WorldTooLarge { dp: usize, tp: usize, pp: usize, max: usize },

    #[error(
        "--pipeline-parallel-size {pp} is not supported: finetp runs every layer of a replica on each of its ranks (pipeline parallelism is not implemented); use --pipeline-parallel-size 1"
    )]
    PipelineParallelUnsupported { pp: usize },
}

/// A rule the model's shapes impose on a component's size.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelConfigError {
    #[error("cannot read model config {path}: {message}")]
    File { path: String, message: String },

    #[error("model config {path} is not valid JSON: {message} at line {line}, column {column}")]
    Json { path: String, message: String, line: usize, column: usize },

    #[error("model config: missing or invalid field \"{field}\" ({detail})")]
    Field { field: &'static str, detail: String },

    #[error("model config: unsupported architecture: the config names {named}; supported: {supported}")]
    UnsupportedModel { named: String, supported: String },

    #[error(
        "{key} = {size} does not divide the {what} of the model ({value}): every {component} shard must have the same size"
    )]
    ShapeNotDivisible { component: Component, key: &'static str, size: usize, what: &'static str, value: usize },

    #[error(
        "{key} = {size} under --tensor-parallel-size {tp} splits the {component} in {} parts, which does not divide the {what} of the model ({value})",
        size * tp
    )]
    TpShapeNotDivisible { component: Component, key: &'static str, size: usize, tp: usize, what: &'static str, value: usize },

    #[error("--tensor-parallel-size {tp} does not divide the model's {what} ({value}): {rule}")]
    TensorParallelNotDivisible { tp: usize, what: &'static str, value: usize, rule: &'static str },
}
