// Stage 2 of argmax: the best of each row's chunk winners, scanned in chunk order.
struct P { t: u32, chunks: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> part: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

fn better(x: f32, best: f32) -> bool {
    return !is_nan(x) && (is_nan(best) || x > best);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = flat(wid, nwg, lid);
    if (row >= p.t) {
        return;
    }
    let b = row * p.chunks;
    var bv = bitcast<f32>(part[2u * b]);
    var bi = part[2u * b + 1u];
    for (var c = 1u; c < p.chunks; c += 1u) {
        let x = bitcast<f32>(part[2u * (b + c)]);
        if (better(x, bv)) {
            bv = x;
            bi = part[2u * (b + c) + 1u];
        }
    }
    out[row] = bi;
}
