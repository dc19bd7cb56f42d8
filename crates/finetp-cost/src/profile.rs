//! Hardware profiles: the handful of numbers the cost model needs, kept as TOML data files
//! (`profiles/*.toml` at the workspace root, built into the binary) so that every figure can
//! carry its source as a comment next to it, and a measured profile can replace a guessed one
//! without recompiling.

use std::path::Path;

/// One accelerator and its interconnect. Units are the ones datasheets use (GB/s, TFLOP/s,
/// microseconds), so a profile reads like the datasheet it was copied from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardwareProfile {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Device-memory bandwidth decode GEMMs stream weights at, GB/s (10⁹ bytes/s).
    pub memory_bandwidth_gbps: f64,
    /// Dense peak of GEMMs in the weights' float dtype (bf16 on accelerators), TFLOP/s: the
    /// compute floor under the memory-bound time.
    pub compute_tflops: f64,
    /// Dense int8 peak, TOP/s: the compute floor of W8A8 GEMMs.
    pub compute_tops_int8: f64,
    /// Whether a GEMM's weight streaming overlaps its arithmetic. Accelerators prefetch the
    /// next tiles while tensor cores work, so a GEMM takes `max(bytes/bw, flops/peak)` (the
    /// roofline; the default). A CPU core mostly waits for a cache line or computes, not both,
    /// so its GEMMs take about `bytes/bw + flops/peak`.
    #[serde(default = "yes")]
    pub compute_overlaps_memory: bool,
    /// Fixed cost of one layer's forward besides its bytes, flops and collectives: kernel
    /// launches or dispatch, µs. Paid equally with and without fine-grained TP, so it never
    /// changes a TPOT delta; it makes absolute times right for tiny layers (an embedding gather
    /// of a few rows). 0 = not modelled (the datasheet profiles).
    #[serde(default)]
    pub layer_overhead_us: f64,
    /// Device memory, GiB; informational (a default for a memory budget), not used by the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_capacity_gib: Option<f64>,
    /// Bytes per activation element exchanged by collectives (2 = bf16, 4 = f32).
    pub activation_bytes: usize,
    /// Devices in one node: a group whose ranks do not all sit in one node uses the inter-node
    /// numbers.
    pub devices_per_node: usize,
    /// Fixed cost of one collective inside a node (launch and synchronisation), µs.
    pub collective_alpha_us: f64,
    /// Extra latency per algorithm step inside a node (a ring has `P−1` steps), µs.
    #[serde(default)]
    pub collective_step_us: f64,
    /// Per-rank, per-direction bandwidth a ring collective achieves inside a node, GB/s.
    pub collective_bus_bandwidth_gbps: f64,
    /// Fixed cost of a collective whose group spans nodes, µs. A single-node profile repeats
    /// the intra-node numbers.
    pub inter_node_alpha_us: f64,
    /// Extra latency per algorithm step across nodes, µs.
    #[serde(default)]
    pub inter_node_step_us: f64,
    /// Per-rank, per-direction bandwidth of a ring collective across nodes, GB/s.
    pub inter_node_bus_bandwidth_gbps: f64,
}

fn yes() -> bool {
    true
}

/// Latency and bandwidth of the links one group's collectives run over, in seconds and bytes/s.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Link {
    pub alpha_s: f64,
    pub step_s: f64,
    pub bandwidth_bytes_per_s: f64,
}

/// A profile that cannot be read or is not valid. Every variant names the file (or built-in
/// profile) it came from.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum ProfileError {
    #[error("cannot read hardware profile {path}: {message}")]
    File { path: String, message: String },

    #[error(
        "hardware profile {path}{}{}: {message}",
        line.map(|l| format!(", line {l}")).unwrap_or_default(),
        field.as_ref().map(|f| format!(", field `{f}`")).unwrap_or_default()
    )]
    Parse { path: String, field: Option<String>, line: Option<usize>, message: String },

    #[error("hardware profile {path}: {field} = {value}: {rule}")]
    Value { path: String, field: &'static str, value: String, rule: &'static str },

    #[error("unknown hardware profile \"{name}\": not a built-in profile ({}) nor a readable file", builtin.join(", "))]
    Unknown { name: String, builtin: Vec<&'static str> },
}

const BUILTIN: [(&str, &str); 4] = [
    ("ascend-910b", include_str!("../../../profiles/ascend-910b.toml")),
    ("h100-sxm", include_str!("../../../profiles/h100-sxm.toml")),
    ("a100", include_str!("../../../profiles/a100.toml")),
    ("cpu-local", include_str!("../../../profiles/cpu-local.toml")),
];

impl HardwareProfile {
    /// Parses and validates a profile. `origin` (a path, or a built-in name) is named by every
    /// error.
    ///
    /// # Errors
    /// [`ProfileError::Parse`] for malformed TOML, a missing, unknown or mistyped field (the
    /// field and line are named); [`ProfileError::Value`] for a value out of range.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, ProfileError> {
        let p: Self = toml::from_str(text).map_err(|e| parse_error(text, origin, &e))?;
        p.validate(origin)?;
        Ok(p)
    }

    /// Reads a profile file.
    pub fn from_path(path: &Path) -> Result<Self, ProfileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ProfileError::File { path: shown.clone(), message: e.to_string() })?;
        Self::from_toml_str(&text, &shown)
    }

    /// A built-in profile by name ([`Self::builtin_names`]).
    pub fn builtin(name: &str) -> Result<Self, ProfileError> {
        let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name) else {
            return Err(ProfileError::Unknown { name: name.to_string(), builtin: Self::builtin_names() });
        };
        Self::from_toml_str(text, &format!("profiles/{name}.toml (built in)"))
    }

    /// Names of the built-in profiles.
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTIN.iter().map(|(n, _)| *n).collect()
    }

    /// What a `--profile` flag takes: a built-in name, else a path to a TOML file.
    pub fn resolve(name_or_path: &str) -> Result<Self, ProfileError> {
        if BUILTIN.iter().any(|(n, _)| *n == name_or_path) {
            return Self::builtin(name_or_path);
        }
        let path = Path::new(name_or_path);
        if path.is_file() {
            Self::from_path(path)
        } else {
            Err(ProfileError::Unknown { name: name_or_path.to_string(), builtin: Self::builtin_names() })
        }
    }

    /// The profile as TOML, without the source comments (what a calibration run writes).
    pub fn to_toml(&self) -> String {
        // Serialising plain numbers and strings cannot fail; fall back to empty rather than panic.
        toml::to_string(self).unwrap_or_default()
    }

    /// The links a group of `span` consecutive devices uses: intra-node when every such group
    /// fits inside one node (`devices_per_node % span == 0`), else inter-node.
    pub fn link(&self, span: usize) -> Link {
        let (alpha_us, step_us, gbps) = if self.spans_nodes(span) {
            (self.inter_node_alpha_us, self.inter_node_step_us, self.inter_node_bus_bandwidth_gbps)
        } else {
            (self.collective_alpha_us, self.collective_step_us, self.collective_bus_bandwidth_gbps)
        };
        Link { alpha_s: alpha_us * 1e-6, step_s: step_us * 1e-6, bandwidth_bytes_per_s: gbps * 1e9 }
    }

    /// True when some group of `span` consecutive devices crosses a node boundary.
    pub fn spans_nodes(&self, span: usize) -> bool {
        span > 1 && !self.devices_per_node.is_multiple_of(span)
    }

    /// Seconds of a GEMM (or gather) that streams `bytes` and computes `flops` (int8 peak when
    /// `int8`): their maximum on a profile whose compute overlaps memory, else their sum.
    pub fn gemm_s(&self, bytes: f64, flops: f64, int8: bool) -> f64 {
        let (m, c) = (self.memory_s(bytes), self.compute_s(flops, int8));
        if self.compute_overlaps_memory { m.max(c) } else { m + c }
    }

    /// Seconds to stream `bytes` from device memory.
    pub fn memory_s(&self, bytes: f64) -> f64 {
        bytes / (self.memory_bandwidth_gbps * 1e9)
    }

    /// Seconds of `flops` at the dense peak (int8 peak when `int8`).
    pub fn compute_s(&self, flops: f64, int8: bool) -> f64 {
        let peak = if int8 { self.compute_tops_int8 } else { self.compute_tflops };
        flops / (peak * 1e12)
    }

    fn validate(&self, origin: &str) -> Result<(), ProfileError> {
        let bad = |field: &'static str, value: String, rule: &'static str| {
            Err(ProfileError::Value { path: origin.to_string(), field, value, rule })
        };
        for (field, v) in [
            ("memory_bandwidth_gbps", Some(self.memory_bandwidth_gbps)),
            ("compute_tflops", Some(self.compute_tflops)),
            ("compute_tops_int8", Some(self.compute_tops_int8)),
            ("collective_bus_bandwidth_gbps", Some(self.collective_bus_bandwidth_gbps)),
            ("inter_node_bus_bandwidth_gbps", Some(self.inter_node_bus_bandwidth_gbps)),
            ("memory_capacity_gib", self.memory_capacity_gib),
        ] {
            if let Some(v) = v.filter(|v| !(v.is_finite() && *v > 0.0)) {
                return bad(field, v.to_string(), "must be a positive, finite number");
            }
        }
        for (field, v) in [
            ("collective_alpha_us", Some(self.collective_alpha_us)),
            ("collective_step_us", Some(self.collective_step_us)),
            ("inter_node_alpha_us", Some(self.inter_node_alpha_us)),
            ("inter_node_step_us", Some(self.inter_node_step_us)),
            ("layer_overhead_us", Some(self.layer_overhead_us)),
        ] {
            if let Some(v) = v.filter(|v| !(v.is_finite() && *v >= 0.0)) {
                return bad(field, v.to_string(), "a latency must be a finite number >= 0");
            }
        }
        if self.devices_per_node == 0 {
            return bad("devices_per_node", "0".into(), "must be >= 1");
        }
        if !matches!(self.activation_bytes, 1 | 2 | 4) {
            return bad("activation_bytes", self.activation_bytes.to_string(), "must be 1, 2 or 4");
        }
        Ok(())
    }
}

/// Turns a TOML error into one naming the file, the line and, where the parser names one, the
/// field.
fn parse_error(text: &str, origin: &str, e: &toml::de::Error) -> ProfileError {
    let message = e.message().trim().to_string();
    let before = |i: usize| text.get(..i).unwrap_or(text);
    let line = e.span().map(|s| before(s.start).matches('\n').count() + 1);
    // serde names the field between backticks: "missing field `x`", "unknown field `x`, ...".
    let field = message.split('`').nth(1).map(str::to_string).or_else(|| {
        // A mistyped value: the key is on the line the span points at.
        let s = e.span()?;
        let line_start = before(s.start).rfind('\n').map_or(0, |i| i + 1);
        let key = text.get(line_start..)?.split('=').next()?.trim();
        (!key.is_empty() && !key.contains('\n')).then(|| key.to_string())
    });
    ProfileError::Parse { path: origin.to_string(), field, line, message }
}
