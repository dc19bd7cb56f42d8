// Stage 1 of argmax: the best (value, index) of each chunk of each row. The order is the CPU
// backend's: larger first, the first of equal maxima, never NaN over a number (NaN is tested
// on the bits, since shader compilers may assume floats are never NaN).
struct P { t: u32, v: u32, chunk: u32, chunks: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> part: array<u32>;

fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

fn better(x: f32, best: f32) -> bool {
    return !is_nan(x) && (is_nan(best) || x > best);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat(wid, nwg, lid);
    if (i >= p.t * p.chunks) {
        return;
    }
    let row = i / p.chunks;
    let c = i - row * p.chunks;
    let start = c * p.chunk;
    let end = min(start + p.chunk, p.v);
    var bi = start;
    var bv = logits[row * p.v + start];
    for (var j = start + 1u; j < end; j += 1u) {
        let x = logits[row * p.v + j];
        if (better(x, bv)) {
            bv = x;
            bi = j;
        }
    }
    part[2u * i] = bitcast<u32>(bv);
    part[2u * i + 1u] = bi;
}
