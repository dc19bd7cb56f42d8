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
    #[error(transparent)]
    Config(#[from] ModelConfigError),
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
