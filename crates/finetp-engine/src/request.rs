//! Requests and their results.

use crate::Sampling;

/// One generation request.
#[derive(Debug, Clone)]
pub struct Request {
    pub id: usize,
    pub prompt: Vec<u32>,
    pub max_tokens: usize,
    pub sampling: Sampling,
    /// Generation stops after any of these ids (it is kept in the output).
    pub stop_ids: Vec<u32>,
}

/// What one request produced.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RequestOutput {
    pub id: usize,
    /// The DP replica that served it (its DP rank).
    pub rank: usize,
    pub tokens: Vec<u32>,
    /// Seconds from the start of generation to its first token.
    pub ttft_s: f64,
}
