// Causal GQA attention over the paged KV cache: one invocation per (query row, head), in one
// pass over the row's keys (not the CPU backend's tiled online softmax; the conformance suite
// compares the two at its attention tolerance): scores q.k (8 lanes, summed in lane order, then
// the tail) times scale, their maximum, then exp(s - max) summed in key order while p * v
// accumulates into y, then y / sum. Key j of a row's sequence is row j % bs
// of block table[slot * max_blocks + j / bs]; a sliding window (window > 0) keeps keys
// pos - window + 1 ..= pos. Padding rows get zeros; rows outside the cache or its block table
// get zeros and are reported in the status word.
struct P { n: u32, nh: u32, nkv: u32, dk: u32, dv: u32, seqs: u32, max_blocks: u32, bs: u32, blocks: u32, window: u32, scale: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> kc: array<f32>;
@group(0) @binding(3) var<storage, read> vc: array<f32>;
@group(0) @binding(4) var<storage, read> table: array<u32>;
@group(0) @binding(5) var<storage, read> slots: array<u32>;
@group(0) @binding(6) var<storage, read> positions: array<u32>;
@group(0) @binding(7) var<storage, read_write> y: array<f32>;
@group(0) @binding(8) var<storage, read_write> st: array<atomic<u32>, 8>;

const PAD: u32 = 0xffffffffu;

fn q4(i: u32) -> vec4<f32> {
    return vec4<f32>(q[i], q[i + 1u], q[i + 2u], q[i + 3u]);
}

fn k4(i: u32) -> vec4<f32> {
    return vec4<f32>(kc[i], kc[i + 1u], kc[i + 2u], kc[i + 3u]);
}

fn score(qb: u32, kb: u32) -> f32 {
    var lo = vec4<f32>(0.0);
    var hi = vec4<f32>(0.0);
    let d8 = p.dk / 8u * 8u;
    for (var o = 0u; o < d8; o += 8u) {
        lo += q4(qb + o) * k4(kb + o);
        hi += q4(qb + o + 4u) * k4(kb + o + 4u);
    }
    let s = ((((((lo.x + lo.y) + lo.z) + lo.w) + hi.x) + hi.y) + hi.z) + hi.w;
    var t = 0.0;
    for (var o = d8; o < p.dk; o += 1u) {
        t += q[qb + o] * kc[kb + o];
    }
    return (s + t) * p.scale;
}

// The cache row (block * bs + offset) of key j of the sequence in `slot`.
fn cache_row(slot: u32, j: u32) -> u32 {
    let b = j / p.bs;
    return table[slot * p.max_blocks + b] * p.bs + j - b * p.bs;
}

fn zero(yb: u32) {
    for (var c = 0u; c < p.dv; c += 1u) {
        y[yb + c] = 0.0;
    }
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    let t = i / p.nh;
    let h = i - t * p.nh;
    let yb = i * p.dv;
    let slot = slots[t];
    if (slot == PAD) {
        zero(yb);
        return;
    }
    let pos = positions[t];
    // Every block the row reads must be in the table and the pool (the last one is the
    // row's own; earlier ones were checked when their rows were written, but a table may
    // change between steps, so all are checked).
    var bad = slot >= p.seqs || pos / p.bs >= p.max_blocks;
    var first = 0u;
    if (p.window > 0u && pos + 1u > p.window) {
        first = pos + 1u - p.window;
    }
    var blk = 0u;
    if (!bad) {
        for (var b = first / p.bs; b <= pos / p.bs; b += 1u) {
            blk = table[slot * p.max_blocks + b];
            if (blk >= p.blocks) {
                bad = true;
                break;
            }
        }
    }
    if (bad) {
        if (h == 0u && atomicCompareExchangeWeak(&st[0], 0u, 2u).exchanged) {
            atomicStore(&st[1], t);
            atomicStore(&st[2], slot);
            atomicStore(&st[3], pos);
            atomicStore(&st[4], p.seqs);
            atomicStore(&st[5], p.max_blocks);
            atomicStore(&st[6], blk);
            atomicStore(&st[7], p.blocks);
        }
        zero(yb);
        return;
    }
    let kh = h / (p.nh / p.nkv);
    let qb = i * p.dk;
    var mx = -3.4028234e38;
    for (var j = first; j <= pos; j += 1u) {
        mx = max(mx, score(qb, (cache_row(slot, j) * p.nkv + kh) * p.dk));
    }
    zero(yb);
    var sum = 0.0;
    for (var j = first; j <= pos; j += 1u) {
        let r = cache_row(slot, j) * p.nkv + kh;
        let e = exp(score(qb, r * p.dk) - mx);
        sum += e;
        let vb = r * p.dv;
        for (var c = 0u; c < p.dv; c += 1u) {
            y[yb + c] += e * vc[vb + c];
        }
    }
    let inv = 1.0 / sum;
    for (var c = 0u; c < p.dv; c += 1u) {
        y[yb + c] *= inv;
    }
}
