//! GGUF files: parsing ([`GgufFile`]), block dequantisation ([`dequant`]) and the HF-named
//! weight source over them ([`GgufWeights`]).

mod dequant;
mod parse;
mod source;

pub use dequant::GgmlType;
pub use parse::{GgufFile, MetaValue, Tables, TensorInfo, parse_tables};
pub use source::GgufWeights;
