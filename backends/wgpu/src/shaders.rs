//! WGSL sources, specialised on the host before compilation.
//!
//! Each `.wgsl` file in `shaders/` is one kernel's body. [`build`] prepends what they share:
//! `enable f16;` when needed, the workgroup size `WG` (clamped to the adapter's limits), the
//! flat-index helper for 2-D grids, and one typed binding + loader per float input whose
//! dtype varies (`ld_w(i) -> f32`, `ld4_w(i) -> vec4<f32>`), so a kernel body reads f32,
//! bf16 or f16 weights with the same code.

use finetp_core::backend::{BackendError, DType};

use crate::caps::Caps;

pub(crate) const LINEAR: &str = include_str!("shaders/linear.wgsl");
pub(crate) const EMBEDDING: &str = include_str!("shaders/embedding.wgsl");
pub(crate) const RMS_NORM: &str = include_str!("shaders/rms_norm.wgsl");
pub(crate) const RMS_F64: &str = include_str!("shaders/rms_f64.wgsl");
pub(crate) const RMS_F32: &str = include_str!("shaders/rms_f32.wgsl");
pub(crate) const ROPE: &str = include_str!("shaders/rope.wgsl");
pub(crate) const SILU_MUL: &str = include_str!("shaders/silu_mul.wgsl");
pub(crate) const ADD: &str = include_str!("shaders/add.wgsl");
pub(crate) const COPY32: &str = include_str!("shaders/copy32.wgsl");
pub(crate) const COPY16: &str = include_str!("shaders/copy16.wgsl");
pub(crate) const KV_WRITE: &str = include_str!("shaders/kv_write.wgsl");
pub(crate) const ATTENTION: &str = include_str!("shaders/attention.wgsl");
pub(crate) const FMA_PROBE: &str = include_str!("shaders/fma_probe.wgsl");

/// How a float tensor is stored and read by a kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stored {
    F32,
    /// Two per word; widened by a shift or a mask.
    BF16,
    /// `array<f16>` with `enable f16;` (the adapter has `shader-f16`).
    F16Native,
    /// Two per word; widened with `unpack2x16float` (no `shader-f16` needed).
    F16Packed,
}

impl Stored {
    /// How a float input of `dtype` is read on this device; `op` names the call for errors.
    pub(crate) fn of(dtype: DType, caps: &Caps, op: &'static str) -> Result<Self, BackendError> {
        match dtype {
            DType::F32 => Ok(Stored::F32),
            DType::BF16 => Ok(Stored::BF16),
            DType::F16 if caps.shader_f16 => Ok(Stored::F16Native),
            DType::F16 => Ok(Stored::F16Packed),
            other => Err(BackendError::DType { op, expected: "f32, bf16 or f16", got: other }),
        }
    }

    /// For pipeline cache keys.
    pub(crate) fn tag(self) -> &'static str {
        match self {
            Stored::F32 => "f32",
            Stored::BF16 => "bf16",
            Stored::F16Native => "f16",
            Stored::F16Packed => "f16p",
        }
    }
}

/// The binding `@binding(b)` called `name` read four elements at a time: `ld4_<name>(i)` for
/// `i % 4 == 0` is one vector load (f32: `vec4<f32>`, 16-bit: `vec2<u32>`), `ld_<name>(i)`
/// any element. Only valid when every `ld4` index is a multiple of 4 (rows of a multiple of
/// 4 elements, windows aligned to 256 bytes).
fn float_input_vec4(name: &str, b: u32, s: Stored) -> String {
    let (ty, ld, ld4) = match s {
        Stored::F32 => ("vec4<f32>", format!("return {name}[i >> 2u][i & 3u];"), format!("return {name}[i >> 2u];")),
        Stored::BF16 => (
            "vec2<u32>",
            format!("let w = {name}[i >> 2u][(i >> 1u) & 1u];\n    if ((i & 1u) == 0u) {{\n        return bitcast<f32>(w << 16u);\n    }}\n    return bitcast<f32>(w & 0xffff0000u);"),
            format!("let w = {name}[i >> 2u];\n    return vec4<f32>(bitcast<f32>(w.x << 16u), bitcast<f32>(w.x & 0xffff0000u), bitcast<f32>(w.y << 16u), bitcast<f32>(w.y & 0xffff0000u));"),
        ),
        Stored::F16Native => ("vec4<f16>", format!("return f32({name}[i >> 2u][i & 3u]);"), format!("return vec4<f32>({name}[i >> 2u]);")),
        Stored::F16Packed => (
            "vec2<u32>",
            format!("return unpack2x16float({name}[i >> 2u][(i >> 1u) & 1u])[i & 1u];"),
            format!("let w = {name}[i >> 2u];\n    return vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));"),
        ),
    };
    format!(
        "@group(0) @binding({b}) var<storage, read> {name}: array<{ty}>;\n\
         fn ld_{name}(i: u32) -> f32 {{\n    {ld}\n}}\n\
         fn ld4_{name}(i: u32) -> vec4<f32> {{\n    {ld4}\n}}\n"
    )
}

/// The binding `@binding(b)` called `name` and its loaders `ld_<name>` / `ld4_<name>`.
fn float_input(name: &str, b: u32, s: Stored) -> String {
    let (ty, ld) = match s {
        Stored::F32 => ("f32", format!("return {name}[i];")),
        Stored::BF16 => (
            "u32",
            format!("let w = {name}[i >> 1u];\n    if ((i & 1u) == 0u) {{\n        return bitcast<f32>(w << 16u);\n    }}\n    return bitcast<f32>(w & 0xffff0000u);"),
        ),
        Stored::F16Native => ("f16", format!("return f32({name}[i]);")),
        Stored::F16Packed => ("u32", format!("return unpack2x16float({name}[i >> 1u])[i & 1u];")),
    };
    let ld4 = match s {
        Stored::F32 => format!("return vec4<f32>({name}[i], {name}[i + 1u], {name}[i + 2u], {name}[i + 3u]);"),
        _ => format!("return vec4<f32>(ld_{name}(i), ld_{name}(i + 1u), ld_{name}(i + 2u), ld_{name}(i + 3u));"),
    };
    format!(
        "@group(0) @binding({b}) var<storage, read> {name}: array<{ty}>;\n\
         fn ld_{name}(i: u32) -> f32 {{\n    {ld}\n}}\n\
         fn ld4_{name}(i: u32) -> vec4<f32> {{\n    {ld4}\n}}\n"
    )
}

/// A complete module: the shared prelude, the float inputs `(name, binding, stored)`, and
/// `body`, in which `WG` is the workgroup size.
pub(crate) fn build(body: &str, caps: &Caps, inputs: &[(&str, u32, Stored)]) -> String {
    build_with(body, caps, inputs, false)
}

/// [`build`], with the float inputs bound as vectors when `vec4` (see [`float_input_vec4`]).
pub(crate) fn build_with(body: &str, caps: &Caps, inputs: &[(&str, u32, Stored)], vec4: bool) -> String {
    let mut s = String::new();
    if inputs.iter().any(|i| i.2 == Stored::F16Native) {
        s.push_str("enable f16;\n");
    }
    s.push_str(&format!(
        "const WG: u32 = {}u;\n\
         fn flat(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {{\n    return (wid.y * nwg.x + wid.x) * WG + lid;\n}}\n",
        caps.wg
    ));
    for (name, b, st) in inputs {
        s.push_str(&if vec4 { float_input_vec4(name, *b, *st) } else { float_input(name, *b, *st) });
    }
    s.push_str(body);
    s
}

/// The GEMM body for `c` activation rows per invocation: every line holding `$c` is
/// repeated for each row. `paired`: the weights are bf16, whose lanes the CPU kernel pairs
/// (elements `2l`, `2l + 1` of a step), so the same order needs the same lanes here.
pub(crate) fn linear_body(c: usize, vec4: bool, paired: bool) -> String {
    let mut out = format!("const C: u32 = {c}u;\nconst PAIRED: bool = {paired};\n");
    out.push_str(if vec4 {
        "@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;\nfn xs(i: u32) -> f32 {\n    return x[i >> 2u][i & 3u];\n}\nfn xv4(i: u32) -> vec4<f32> {\n    return x[i >> 2u];\n}\n"
    } else {
        "@group(0) @binding(1) var<storage, read> x: array<f32>;\nfn xs(i: u32) -> f32 {\n    return x[i];\n}\nfn xv4(i: u32) -> vec4<f32> {\n    return vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]);\n}\n"
    });
    for line in LINEAR.lines() {
        if line.contains("$c") {
            for i in 0..c {
                out.push_str(&line.replace("$c", &i.to_string()));
                out.push('\n');
            }
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}
