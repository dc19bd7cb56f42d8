// Rotates x [T, nh, d] in place: one invocation per (row, head, pair). Angles in f32, as the
// CPU backend and HF compute them (position * inv_freq rounded to f32); sin and cos times the
// table's attention factor (YaRN's mscale; 1 for plain RoPE).
struct P { n: u32, nh: u32, d: u32, half: u32, interleaved: u32, factor: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> positions: array<u32>;
@group(0) @binding(3) var<storage, read> inv_freq: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    let f = i % p.half;
    let th = i / p.half;
    let t = th / p.nh;
    let base = th * p.d;
    let a = f32(positions[t]) * inv_freq[f];
    let s = sin(a) * p.factor;
    let c = cos(a) * p.factor;
    var ia = f;
    var ib = f + p.half;
    if (p.interleaved != 0u) {
        ia = 2u * f;
        ib = ia + 1u;
    }
    let x0 = x[base + ia];
    let x1 = x[base + ib];
    x[base + ia] = x0 * c - x1 * s;
    x[base + ib] = x0 * s + x1 * c;
}
