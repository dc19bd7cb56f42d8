// Row t of x [T, row] goes to the paged cache [blocks, bs, row]: row pos % bs of block
// table[slot * max_blocks + pos / bs]; padding rows are skipped; rows outside the cache or
// its block table are reported in the status word.
struct P { n: u32, row: u32, seqs: u32, max_blocks: u32, bs: u32, blocks: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> cache: array<f32>;
@group(0) @binding(3) var<storage, read> table: array<u32>;
@group(0) @binding(4) var<storage, read> slots: array<u32>;
@group(0) @binding(5) var<storage, read> positions: array<u32>;
@group(0) @binding(6) var<storage, read_write> st: array<atomic<u32>, 8>;

const PAD: u32 = 0xffffffffu;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    let t = i / p.row;
    let e = i - t * p.row;
    let slot = slots[t];
    if (slot == PAD) {
        return;
    }
    let pos = positions[t];
    let b = pos / p.bs;
    var blk = PAD;
    if (slot < p.seqs && b < p.max_blocks) {
        blk = table[slot * p.max_blocks + b];
    }
    if (blk >= p.blocks) {
        if (e == 0u && atomicCompareExchangeWeak(&st[0], 0u, 1u).exchanged) {
            atomicStore(&st[1], t);
            atomicStore(&st[2], slot);
            atomicStore(&st[3], pos);
            atomicStore(&st[4], p.seqs);
            atomicStore(&st[5], p.max_blocks);
            atomicStore(&st[6], blk);
            atomicStore(&st[7], p.blocks);
        }
        return;
    }
    cache[(blk * p.bs + pos - b * p.bs) * p.row + e] = x[i];
}
