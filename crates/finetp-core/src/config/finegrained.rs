//! `--additional-config` and its `finegrained_tp_config` object, exactly as vLLM-Ascend takes them.
//!
//! Unlike vLLM-Ascend (which ignores unknown keys and does no type checking), an unknown key
//! inside `finegrained_tp_config` is an error that names the key and the valid ones, and a
//! non-integer or non-positive size is rejected: a typo must not silently disable a feature.

use serde_json::{Map, Value};

use super::{Component, ConfigError};

/// Per-component fine-grained TP sizes; `None` = not sharded by fine-grained TP (replicated
/// across the data-parallel ranks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "Map<String, Value>")]
pub struct FinegrainedTpConfig {
    #[serde(rename = "embedding_tensor_parallel_size", skip_serializing_if = "Option::is_none")]
    pub embedding: Option<usize>,
    #[serde(rename = "lmhead_tensor_parallel_size", skip_serializing_if = "Option::is_none")]
    pub lm_head: Option<usize>,
    #[serde(rename = "oproj_tensor_parallel_size", skip_serializing_if = "Option::is_none")]
    pub o_proj: Option<usize>,
    #[serde(rename = "mlp_tensor_parallel_size", skip_serializing_if = "Option::is_none")]
    pub mlp: Option<usize>,
}

impl FinegrainedTpConfig {
    /// The configured size of `c`, if any.
    pub fn get(&self, c: Component) -> Option<usize> {
        match c {
            Component::Embedding => self.embedding,
            Component::LmHead => self.lm_head,
            Component::OProj => self.o_proj,
            Component::Mlp => self.mlp,
        }
    }

    /// The group size `c` runs with: its configured size, or 1 (replicated) when absent.
    pub fn size(&self, c: Component) -> usize {
        self.get(c).unwrap_or(1)
    }

    pub fn set(&mut self, c: Component, size: Option<usize>) {
        match c {
            Component::Embedding => self.embedding = size,
            Component::LmHead => self.lm_head = size,
            Component::OProj => self.o_proj = size,
            Component::Mlp => self.mlp = size,
        }
    }

    /// The same sizes for all four components.
    pub fn uniform(size: usize) -> Self {
        Self { embedding: Some(size), lm_head: Some(size), o_proj: Some(size), mlp: Some(size) }
    }

    /// Parses the `finegrained_tp_config` object.
    pub fn from_map(map: &Map<String, Value>) -> Result<Self, ConfigError> {
        let mut out = Self::default();
        for (key, value) in map {
            let Some(c) = Component::from_config_key(key) else {
                return Err(unknown_key(key));
            };
            out.set(c, Some(parse_size(c, value)?));
        }
        Ok(out)
    }

    /// The `--additional-config` JSON that selects these sizes.
    pub fn to_additional_config_json(&self) -> String {
        serde_json::json!({ "finegrained_tp_config": self }).to_string()
    }
}

impl TryFrom<Map<String, Value>> for FinegrainedTpConfig {
    type Error = ConfigError;
    fn try_from(map: Map<String, Value>) -> Result<Self, Self::Error> {
        Self::from_map(&map)
    }
}

fn parse_size(c: Component, value: &Value) -> Result<usize, ConfigError> {
    let key = c.config_key();
    let n = match value {
        Value::Number(n) if n.is_i64() || n.is_u64() => n.as_i64().unwrap_or(i64::MAX),
        other => return Err(ConfigError::NotAnInteger { key, value: other.to_string() }),
    };
    if n < 1 {
        return Err(ConfigError::SizeTooSmall { component: c, key, size: n });
    }
    usize::try_from(n).map_err(|_| ConfigError::NotAnInteger { key, value: n.to_string() })
}

fn unknown_key(key: &str) -> ConfigError {
    let valid: Vec<&'static str> = Component::ALL.iter().map(|c| c.config_key()).collect();
    let suggestion = valid
        .iter()
        .map(|v| (edit_distance(key, v), *v))
        .filter(|(d, _)| *d <= 4)
        .min()
        .map(|(_, v)| v.to_string());
    ConfigError::UnknownKey { key: key.to_string(), suggestion, valid }
}

/// Levenshtein distance, for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The whole `--additional-config` object. Only `finegrained_tp_config` is interpreted; other
/// top-level keys (vLLM-Ascend has many) are kept, and reported by [`Self::ignored_keys`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdditionalConfig {
    pub finegrained_tp: FinegrainedTpConfig,
    /// Top-level keys finetp does not interpret, kept as given.
    pub other: Map<String, Value>,
}

impl AdditionalConfig {
    /// Parses a JSON string. Malformed JSON reports line and column.
    pub fn parse(json: &str) -> Result<Self, ConfigError> {
        let value: Value = serde_json::from_str(json).map_err(|e| ConfigError::Json {
            message: strip_position(&e.to_string()),
            line: e.line(),
            column: e.column(),
        })?;
        let Value::Object(mut top) = value else {
            return Err(ConfigError::NotAnObject { what: "--additional-config", got: kind_of(&value) });
        };
        let finegrained_tp = match top.remove("finegrained_tp_config") {
            None | Some(Value::Null) => FinegrainedTpConfig::default(),
            Some(Value::Object(m)) => FinegrainedTpConfig::from_map(&m)?,
            Some(v) => return Err(ConfigError::NotAnObject { what: "finegrained_tp_config", got: kind_of(&v) }),
        };
        for key in top.keys() {
            tracing::warn!(key = %key, "--additional-config key is not used by finetp; ignored");
        }
        Ok(Self { finegrained_tp, other: top })
    }

    /// Parses the flag's value: inline JSON, or `@path` to read JSON from a file.
    pub fn from_arg(arg: &str) -> Result<Self, ConfigError> {
        match arg.strip_prefix('@') {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::File { path: path.to_string(), message: e.to_string() })?;
                Self::parse(&text)
            }
            None => Self::parse(arg),
        }
    }

    /// Top-level keys that are kept but not interpreted.
    pub fn ignored_keys(&self) -> Vec<&str> {
        self.other.keys().map(String::as_str).collect()
    }
}

/// serde_json appends " at line L column C"; the error carries those as fields already.
pub(crate) fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

fn kind_of(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(n) => format!("the number {n}"),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_seed_example() {
        let c = AdditionalConfig::parse(
            r#"{"finegrained_tp_config":{"embedding_tensor_parallel_size":8,
            "lmhead_tensor_parallel_size":8,"oproj_tensor_parallel_size":8,"mlp_tensor_parallel_size":8}}"#,
        )
        .unwrap();
        assert_eq!(c.finegrained_tp, FinegrainedTpConfig::uniform(8));
        assert!(c.other.is_empty());
    }

    #[test]
    fn absent_keys_mean_replicated() {
        let c = AdditionalConfig::parse(r#"{"finegrained_tp_config":{"lmhead_tensor_parallel_size":4}}"#).unwrap();
        assert_eq!(c.finegrained_tp.get(Component::LmHead), Some(4));
        assert_eq!(c.finegrained_tp.get(Component::Mlp), None);
        assert_eq!(c.finegrained_tp.size(Component::Mlp), 1);
    }

    #[test]
    fn unknown_key_names_key_suggestion_and_valid_keys() {
        let e = AdditionalConfig::parse(r#"{"finegrained_tp_config":{"lm_head_tensor_parallel_size":4}}"#).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("\"lm_head_tensor_parallel_size\""), "{msg}");
        assert!(msg.contains("did you mean \"lmhead_tensor_parallel_size\""), "{msg}");
        assert!(msg.contains("mlp_tensor_parallel_size"), "{msg}");
    }

    #[test]
    fn other_top_level_keys_are_kept() {
        let c = AdditionalConfig::parse(r#"{"torchair_graph_config":{"enabled":true}}"#).unwrap();
        assert_eq!(c.ignored_keys(), vec!["torchair_graph_config"]);
        assert_eq!(c.finegrained_tp, FinegrainedTpConfig::default());
    }

    #[test]
    fn non_integers_and_small_sizes_are_rejected() {
        for (v, needle) in [("2.5", "2.5"), ("\"8\"", "\"8\""), ("true", "true"), ("null", "null")] {
            let e = AdditionalConfig::parse(&format!(r#"{{"finegrained_tp_config":{{"mlp_tensor_parallel_size":{v}}}}}"#))
                .unwrap_err();
            assert!(matches!(e, ConfigError::NotAnInteger { .. }), "{v}: {e}");
            assert!(e.to_string().contains(needle));
        }
        for v in [0, -3] {
            let e = AdditionalConfig::parse(&format!(r#"{{"finegrained_tp_config":{{"mlp_tensor_parallel_size":{v}}}}}"#))
                .unwrap_err();
            assert_eq!(e, ConfigError::SizeTooSmall { component: Component::Mlp, key: "mlp_tensor_parallel_size", size: v });
        }
    }

    #[test]
    fn malformed_json_reports_line_and_column() {
        let e = AdditionalConfig::parse("{\n  \"finegrained_tp_config\": {,}\n}").unwrap_err();
        assert!(matches!(e, ConfigError::Json { line: 2, column: 29, .. }), "{e:?}");
    }

    #[test]
    fn serde_round_trip_and_paste_ready_json() {
        let c = FinegrainedTpConfig { lm_head: Some(8), mlp: Some(2), ..Default::default() };
        let json = c.to_additional_config_json();
        assert_eq!(AdditionalConfig::parse(&json).unwrap().finegrained_tp, c);
        let back: FinegrainedTpConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        assert!(serde_json::from_str::<FinegrainedTpConfig>(r#"{"mlp_tp":2}"#).is_err());
    }
}
