//! GGUF files: parsing ([`GgufFile`]), block dequantisation ([`dequant`]) and the HF-named
//! weight source over them ([`GgufWeights`]).

mod dequant;
mod decoded_formats;
mod parse;
mod source;

pub use dequant::{GgmlType, dequantize};
pub use parse::{GgufFile, MetaValue, Tables, TensorInfo, parse_tables};
pub use source::GgufWeights;
