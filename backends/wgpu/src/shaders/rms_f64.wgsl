fn inv_rms(base: u32) -> f32 {
    var s = f64(0.0);
    for (var i = 0u; i < p.h; i += 1u) {
        let v = f64(x[base + i]);
        s += v * v;
    }
    let ms = s / f64(p.h);
    return f32(f64(1.0) / sqrt(ms + f64(p.eps)));
}
