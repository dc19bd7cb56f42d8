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

/// Paired (bf16) lanes of half h of a step whose 16 elements are the quads q0..q3: lanes 0..4
/// are elements h, 2 + h, 4 + h, 6 + h (from q0, q1), lanes 4..8 are 8 + h, ..., 14 + h (q2, q3).
fn pair_lanes(qa: vec4<f32>, qb: vec4<f32>, h: u32) -> vec4<f32> {
    return select(vec4<f32>(qa.x, qa.z, qb.x, qb.z), vec4<f32>(qa.y, qa.w, qb.y, qb.w), h == 1u);
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
        for (var o = k0; o < k1; o += 16u) {
            // A step is four quads of elements; the last one of a block is zero-padded.
            var w0: vec4<f32>; var w1: vec4<f32>; var w2: vec4<f32>; var w3: vec4<f32>;
            var xa$c: vec4<f32>; var xb_$c: vec4<f32>; var xc$c: vec4<f32>; var xd$c: vec4<f32>;
            if (o < full) {
                w0 = ld4_w(wb + o); w1 = ld4_w(wb + o + 4u); w2 = ld4_w(wb + o + 8u); w3 = ld4_w(wb + o + 12u);
                xa$c = xv4(xb$c + o); xb_$c = xv4(xb$c + o + 4u); xc$c = xv4(xb$c + o + 8u); xd$c = xv4(xb$c + o + 12u);
            } else {
                w0 = w4z(wb, o, k1); w1 = w4z(wb, o + 4u, k1); w2 = w4z(wb, o + 8u, k1); w3 = w4z(wb, o + 12u, k1);
                xa$c = x4z(xb$c, o, k1); xb_$c = x4z(xb$c, o + 4u, k1); xc$c = x4z(xb$c, o + 8u, k1); xd$c = x4z(xb$c, o + 12u, k1);
            }
            for (var h = 0u; h < 2u; h += 1u) {
                // Unpaired: half h is quads (2h, 2h + 1); paired: the h-th element of each pair.
                var wl: vec4<f32>; var wh: vec4<f32>;
                if (PAIRED) {
                    wl = pair_lanes(w0, w1, h); wh = pair_lanes(w2, w3, h);
                } else {
                    wl = select(w0, w2, h == 1u); wh = select(w1, w3, h == 1u);
                }
                var xl$c: vec4<f32>; var xh$c: vec4<f32>;
                if (PAIRED) {
                    xl$c = pair_lanes(xa$c, xb_$c, h); xh$c = pair_lanes(xc$c, xd$c, h);
                } else {
                    xl$c = select(xa$c, xc$c, h == 1u); xh$c = select(xb_$c, xd$c, h == 1u);
                }
                lo$c = fma(xl$c, wl, lo$c);
                hi$c = fma(xh$c, wh, hi$c);
            }
        }
        let h$c = lo$c + hi$c;
        t$c += (h$c.x + h$c.y) + (h$c.z + h$c.w);
    }
    if (i0 + $cu < p.m) { y[(b * p.m + i0 + $cu) * p.n + j] = select(t$c, t$c + bias[j], p.has_bias != 0u); }
}
