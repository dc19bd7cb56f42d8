//! # finetp-loader
//!
//! Opens a checkpoint — a Hugging Face directory (`config.json`, `*.safetensors`, optional
//! `model.safetensors.index.json`, `tokenizer.json`) or a GGUF file — as a
//! [`WeightSource`](finetp_core::shard::WeightSource) that serves HF tensor names and shapes
//! whatever the format, and reads only the slice a rank asks for. Files are memory-mapped, so a
//! rank's resident memory is its shards, not the checkpoint.

mod chat;
mod checkpoint;
mod error;
mod fetch;
mod fp8_blocks;
pub mod gguf;
mod progress;
mod safetensors_dir;
mod tokenizer;

pub use chat::{Message, PromptFormat};
pub use checkpoint::Checkpoint;
pub use error::LoaderError;
pub use fetch::{DEFAULT_MODEL_PACKAGE, cache_dir, default_model};
pub use fp8_blocks::Fp8BlockScale;
pub use progress::ProgressWeights;
pub use safetensors_dir::SafetensorsDir;
pub use tokenizer::tokenizer_from_gguf;
