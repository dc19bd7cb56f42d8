//! Loader errors: each names the file and, where there is one, the tensor.

use finetp_core::config::ModelConfigError;
use finetp_core::shard::LoadError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoaderError {
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("{path}: not a valid GGUF file: {detail}")]
    Gguf { path: String, detail: String },
    /// A config that names its file itself (unreadable, not JSON).
    #[error(transparent)]
    Config(ModelConfigError),
    /// A config whose fields are wrong, with the file (config.json, or a GGUF's metadata) it
    /// came from.
    #[error("{path}: {source}")]
    ConfigIn { path: String, source: ModelConfigError },
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{path}: {detail}")]
    Tokenizer { path: String, detail: String },
    /// A `quantization_config` finetp cannot read (it would misread the weights).
    #[error("{path}: {detail}")]
    Quantization { path: String, detail: String },
    #[error("cannot fetch the default model: {0}")]
    Fetch(String),
}

impl LoaderError {
    /// `e`, found in the config of `path`, naming `path` unless its message already does.
    pub(crate) fn config(path: String, e: ModelConfigError) -> Self {
        match e {
            e @ (ModelConfigError::Json { .. } | ModelConfigError::File { .. }) => LoaderError::Config(e),
            e => LoaderError::ConfigIn { path, source: e },
        }
    }
}
