// A 2-D block of 32-bit elements (any dtype: the bits are copied).
struct P { n: u32, cols: u32, sw: u32, dw: u32, src_row: u32, src_col: u32, dst_row: u32, dst_col: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = flat(wid, nwg, lid);
    if (i >= p.n) {
        return;
    }
    let r = i / p.cols;
    let c = i - r * p.cols;
    dst[(p.dst_row + r) * p.dw + p.dst_col + c] = src[(p.src_row + r) * p.sw + p.src_col + c];
}
