// Vocab-parallel lookup over one window of the table: rows of ids in this shard and in this
// window are copied (widened to f32); ids of other shards get zeros (written by the first
// window's launch only, so every output element is written exactly once).
struct P { n: u32, h: u32, row_start: u32, rows: u32, r0: u32, wrows: u32, w_off: u32, first: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    let t = i / p.h;
    let e = i - t * p.h;
    let id = ids[t];
    if (id >= p.row_start && id - p.row_start < p.rows) {
        let r = id - p.row_start;
        if (r >= p.r0 && r - p.r0 < p.wrows) {
            y[i] = ld_w(p.w_off + (r - p.r0) * p.h + e);
        }
    } else if (p.first != 0u) {
        y[i] = 0.0;
    }
}
