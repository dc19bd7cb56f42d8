// One invocation per row: y = x / sqrt(mean(x^2) + eps) * w. The sum of squares is in f64
// when the adapter has shader-f64 (exactly the CPU backend's arithmetic: products of f32 are
// exact in f64 and the sum runs in order), else in f32 over 8 lanes.
struct P { rows: u32, h: u32, eps: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = flat(wid, nwg, lid);
    if (row >= p.rows) {
        return;
    }
    let base = row * p.h;
    let inv = inv_rms(base);
    for (var i = 0u; i < p.h; i += 1u) {
        y[base + i] = x[base + i] * inv * ld_w(i);
    }
}
