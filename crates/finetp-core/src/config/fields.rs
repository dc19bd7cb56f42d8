//! Typed access to a `config.json` object, every error naming the field.

use serde_json::{Map, Value};

use super::ModelConfigError;

/// Typed field access with errors naming the field.
pub(super) struct Fields<'a>(pub &'a Map<String, Value>);

impl Fields<'_> {
    pub(super) fn get(&self, field: &'static str) -> Option<&Value> {
        self.0.get(field).filter(|v| !v.is_null())
    }
    pub(super) fn usize(&self, field: &'static str) -> Result<usize, ModelConfigError> {
        self.opt_usize(field)?.ok_or(ModelConfigError::Field { field, detail: "required".into() })
    }
    pub(super) fn opt_usize(&self, field: &'static str) -> Result<Option<usize>, ModelConfigError> {
        self.get(field)
            .map(|v| {
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| ModelConfigError::Field { field, detail: format!("expected a non-negative integer, got {v}") })
            })
            .transpose()
    }
    pub(super) fn opt_f64(&self, field: &'static str) -> Result<Option<f64>, ModelConfigError> {
        self.get(field)
            .map(|v| v.as_f64().ok_or_else(|| ModelConfigError::Field { field, detail: format!("expected a number, got {v}") }))
            .transpose()
    }
    pub(super) fn opt_bool(&self, field: &'static str) -> Result<Option<bool>, ModelConfigError> {
        self.get(field)
            .map(|v| v.as_bool().ok_or_else(|| ModelConfigError::Field { field, detail: format!("expected true/false, got {v}") }))
            .transpose()
    }
    pub(super) fn opt_string(&self, field: &'static str) -> Result<Option<String>, ModelConfigError> {
        self.get(field)
            .map(|v| v.as_str().map(str::to_string).ok_or_else(|| ModelConfigError::Field { field, detail: format!("expected a string, got {v}") }))
            .transpose()
    }
}
