fn inv_rms(base: u32) -> f32 {
    var lo = vec4<f32>(0.0);
    var hi = vec4<f32>(0.0);
    let h8 = p.h / 8u * 8u;
    for (var i = 0u; i < h8; i += 8u) {
        let a = vec4<f32>(x[base + i], x[base + i + 1u], x[base + i + 2u], x[base + i + 3u]);
        let b = vec4<f32>(x[base + i + 4u], x[base + i + 5u], x[base + i + 6u], x[base + i + 7u]);
        lo = fma(a, a, lo);
        hi = fma(b, b, hi);
    }
    let q = lo + hi;
    var s = (q.x + q.z) + (q.y + q.w);
    for (var i = h8; i < p.h; i += 1u) {
        s = fma(x[base + i], x[base + i], s);
    }
    return 1.0 / sqrt(s / f32(p.h) + p.eps);
}
