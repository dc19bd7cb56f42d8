//! Reading what `finetp run --json` printed, for the CLI's tests.

/// Every request's generated token ids, in request order.
///
/// # Errors
/// A message naming what is missing: no `outputs`, a request without `tokens`, or an id that
/// is not an unsigned integer.
pub fn output_tokens(report: &serde_json::Value) -> Result<Vec<Vec<u64>>, String> {
    let outputs = report["outputs"].as_array().ok_or_else(|| format!("no outputs in the report: {report}"))?;
    outputs
        .iter()
        .map(|o| {
            let tokens = o["tokens"].as_array().ok_or_else(|| format!("a request without tokens: {o}"))?;
            tokens.iter().map(|t| t.as_u64().ok_or_else(|| format!("token {t} is not an id"))).collect()
        })
        .collect()
}
