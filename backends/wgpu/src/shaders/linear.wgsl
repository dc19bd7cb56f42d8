// y[b, i, j] = x[b, i] . w[b * n + j] (+ bias[j]): one invocation per weight row of this
// window and C activation rows, no workgroup memory and no barriers (llvmpipe runs barriers
// very slowly, and a weight row is read by exactly one invocation anyway).
//
// The reduction order is the CPU backend's (backends/cpu/src/gemm/tile.rs): k is cut into
// blocks of KB, each zero-padded to whole steps of 16; lane l of 8 adds by fma, in each step,
// first its element of half 0, then its element of half 1 (elements l and 8 + l, or for bf16
// weights, PAIRED, elements 2l and 2l + 1); the lanes are reduced as (h0 + h1) + (h2 + h3)
// with h_l = a_l + a_(l+4); block sums are added in order starting from 0. Lines with `$c` are
// repeated for each of the C activation rows. `x` (binding 1) and its loaders `xs`/`xv4`, and
// the constant PAIRED, are prepended.
struct P { m: u32, k: u32, n: u32, r0: u32, rows: u32, w_off: u32, has_bias: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const KB: u32 = 512u;

/// Element i of the weight row at wb, zero past `end` (the padding of a block's last step).
fn wz(wb: u32, i: u32, end: u32) -> f32 {
    return select(0.0, ld_w(wb + i), i < end);
}

/// Four elements of a step, zero past `end`.
fn w4z(wb: u32, i: u32, end: u32) -> vec4<f32> {
    return vec4<f32>(wz(wb, i, end), wz(wb, i + 1u, end), wz(wb, i + 2u, end), wz(wb, i + 3u, end));
}

fn xz(xb: u32, i: u32, end: u32) -> f32 {
    return select(0.0, xs(xb + i), i < end);
}

fn x4z(xb: u32, i: u32, end: u32) -> vec4<f32> {
    return vec4<f32>(xz(xb, i, end), xz(xb, i + 1u, end), xz(xb, i + 2u, end), xz(xb, i + 3u, end));
}

/// One step of 16 elements, given as four quads of x and of w: lane l adds its element of
/// half 0, then of half 1 — elements l and 8 + l, or (PAIRED) 2l and 2l + 1.
fn step(lo: ptr<function, vec4<f32>>, hi: ptr<function, vec4<f32>>, xa: vec4<f32>, xb: vec4<f32>, xc: vec4<f32>, xd: vec4<f32>, w0: vec4<f32>, w1: vec4<f32>, w2: vec4<f32>, w3: vec4<f32>) {
    if (PAIRED) {
        *lo = fma(vec4<f32>(xa.x, xa.z, xb.x, xb.z), vec4<f32>(w0.x, w0.z, w1.x, w1.z), *lo);
        *hi = fma(vec4<f32>(xc.x, xc.z, xd.x, xd.z), vec4<f32>(w2.x, w2.z, w3.x, w3.z), *hi);
        *lo = fma(vec4<f32>(xa.y, xa.w, xb.y, xb.w), vec4<f32>(w0.y, w0.w, w1.y, w1.w), *lo);
        *hi = fma(vec4<f32>(xc.y, xc.w, xd.y, xd.w), vec4<f32>(w2.y, w2.w, w3.y, w3.w), *hi);
    } else {
        *lo = fma(xa, w0, *lo);
        *hi = fma(xb, w1, *hi);
        *lo = fma(xc, w2, *lo);
        *hi = fma(xd, w3, *hi);
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let rl = wid.x * WG + lid;
    if (rl >= p.rows) {
        return;
    }
    let r = p.r0 + rl;
    let b = r / p.n;
    let j = r - b * p.n;
    let i0 = wid.y * C;
    let wb = p.w_off + rl * p.k;
    let xb$c = (b * p.m + min(i0 + $cu, p.m - 1u)) * p.k;
    var t$c = 0.0;
    for (var k0 = 0u; k0 < p.k; k0 += KB) {
        let k1 = min(k0 + KB, p.k);
        let full = k0 + (k1 - k0) / 16u * 16u;
        var lo$c = vec4<f32>(0.0);
        var hi$c = vec4<f32>(0.0);
        for (var o = k0; o < full; o += 16u) {
            let w0 = ld4_w(wb + o);
            let w1 = ld4_w(wb + o + 4u);
            let w2 = ld4_w(wb + o + 8u);
            let w3 = ld4_w(wb + o + 12u);
            step(&lo$c, &hi$c, xv4(xb$c + o), xv4(xb$c + o + 4u), xv4(xb$c + o + 8u), xv4(xb$c + o + 12u), w0, w1, w2, w3);
        }
        if (full < k1) {
            // The block's last step, zero-padded (as the CPU pads it).
            let w0 = w4z(wb, full, k1);
            let w1 = w4z(wb, full + 4u, k1);
            let w2 = w4z(wb, full + 8u, k1);
            let w3 = w4z(wb, full + 12u, k1);
            step(&lo$c, &hi$c, x4z(xb$c, full, k1), x4z(xb$c, full + 4u, k1), x4z(xb$c, full + 8u, k1), x4z(xb$c, full + 12u, k1), w0, w1, w2, w3);
        }
        let h$c = lo$c + hi$c;
        t$c += (h$c.x + h$c.y) + (h$c.z + h$c.w);
    }
    if (i0 + $cu < p.m) { y[(b * p.m + i0 + $cu) * p.n + j] = select(t$c, t$c + bias[j], p.has_bias != 0u); }
}
