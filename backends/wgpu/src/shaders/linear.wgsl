// y[b, i, j] = x[b, i] . w[b * n + j] (+ bias[j]): one invocation per weight row of this
// window and C activation rows, no workgroup memory and no barriers (llvmpipe runs barriers
// very slowly, and a weight row is read by exactly one invocation anyway).
//
// The reduction order is the CPU backend's (backends/cpu/src/gemm/tile.rs): k is cut into
// blocks of KB; in a block, lane l of 8 sums k = l (mod 8) in order with fma; the lanes are
// reduced as (a0+a4 + a2+a6) + (a1+a5 + a3+a7); the block's tail is added in order with fma;
// block sums are added in order starting from 0. Lines with `$c` are repeated for each of
// the C activation rows. `x` (binding 1) and its loaders `xs`/`xv4` are prepended.
struct P { m: u32, k: u32, n: u32, r0: u32, rows: u32, w_off: u32, has_bias: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const KB: u32 = 1024u;

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
        let kv = k0 + (k1 - k0) / 8u * 8u;
        var lo$c = vec4<f32>(0.0);
        var hi$c = vec4<f32>(0.0);
        for (var o = k0; o < kv; o += 8u) {
            let wl = ld4_w(wb + o);
            let wh = ld4_w(wb + o + 4u);
            lo$c = fma(xv4(xb$c + o), wl, lo$c);
            hi$c = fma(xv4(xb$c + o + 4u), wh, hi$c);
        }
        let h$c = lo$c + hi$c;
        var s$c = (h$c.x + h$c.z) + (h$c.y + h$c.w);
        for (var o = kv; o < k1; o += 1u) {
            let wv = ld_w(wb + o);
            s$c = fma(xs(xb$c + o), wv, s$c);
        }
        t$c += s$c;
    }
    if (i0 + $cu < p.m) { y[(b * p.m + i0 + $cu) * p.n + j] = select(t$c, t$c + bias[j], p.has_bias != 0u); }
}
