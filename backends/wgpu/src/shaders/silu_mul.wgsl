// y[t, c] = silu(gu[t, c]) * gu[t, I + c].
struct P { n: u32, i: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> gu: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let idx = flat(wid, nwg, lid);
    if (idx >= p.n) {
        return;
    }
    let t = idx / p.i;
    let c = idx - t * p.i;
    let a = gu[t * 2u * p.i + c];
    let b = gu[t * 2u * p.i + p.i + c];
    y[idx] = a / (1.0 + exp(-a)) * b;
}
