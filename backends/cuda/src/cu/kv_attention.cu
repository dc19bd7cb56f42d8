// The paged KV cache: writing a step's keys/values into their blocks, and causal attention of
// each query row over its own sequence's cache (GQA, optional sliding window), in one kernel
// whatever mix of prefill and decode rows the step has, so a decode step can be captured.
// A row whose slot, block or position falls outside the cache sets err[0] (read at the next
// sync point) instead of touching memory.

#define PAD_SLOT 0xffffffffu
#define MAX_DV 1024

// Where row r's keys live: the cache row index (block * bs + pos % bs), or -1 when out of range.
__device__ __forceinline__ long long cache_row(const u32* bt, u32 slot, u32 pos, u32 bs, u32 max_blocks, u32 blocks, u32 seqs) {
    if (slot >= seqs) return -1;
    u32 j = pos / bs;
    if (j >= max_blocks) return -1;
    u32 b = bt[(u64)slot * max_blocks + j];
    if (b >= blocks) return -1;
    return (long long)b * bs + pos % bs;
}

// x: f32 [t, row] (row = heads * dim) into cache [blocks, bs, heads, dim]. One block a row.
extern "C" __global__ void finetp_kv_write(const float* x, float* cache, const u32* bt, const u32* slots, const u32* positions, u32 t, u32 row, u32 bs, u32 max_blocks, u32 blocks, u32 seqs, u32* err) {
    u32 r = blockIdx.x;
    if (r >= t) return;
    u32 slot = slots[r];
    if (slot == PAD_SLOT) return;
    long long at = cache_row(bt, slot, positions[r], bs, max_blocks, blocks, seqs);
    if (at < 0) {
        if (threadIdx.x == 0) atomicOr(err, 1u);
        return;
    }
    for (u32 i = threadIdx.x; i < row; i += blockDim.x) cache[(u64)at * row + i] = x[(u64)r * row + i];
}

// One warp per (query row, head): an online softmax over keys 0..=pos (or the window) of the
// row's sequence; lane l holds output dims l, l + 32, ... q: [t, nh, dk]; caches
// [blocks, bs, nkv, dk|dv]; y: [t, nh, dv]; padding rows get zeros.
extern "C" __global__ void finetp_attention(const float* q, const float* kc, const float* vc, const u32* bt, const u32* slots, const u32* positions, float* y,
                                            u32 t, u32 nh, u32 nkv, u32 dk, u32 dv, u32 bs, u32 max_blocks, u32 blocks, u32 seqs, float scale, u32 window, u32* err) {
    u32 r = blockIdx.x, h = blockIdx.y, lane = threadIdx.x;
    if (r >= t || h >= nh) return;
    float* out = y + ((u64)r * nh + h) * dv;
    u32 slot = slots[r];
    if (slot == PAD_SLOT) {
        for (u32 d = lane; d < dv; d += 32) out[d] = 0.0f;
        return;
    }
    u32 pos = positions[r];
    u32 kvh = h / (nh / nkv);
    const float* qr = q + ((u64)r * nh + h) * dk;
    u32 first = (window > 0 && pos + 1 > window) ? pos + 1 - window : 0;
    float acc[MAX_DV / 32];
    for (int i = 0; i < MAX_DV / 32; i++) acc[i] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    for (u32 j = first; j <= pos; j++) {
        long long at = cache_row(bt, slot, j, bs, max_blocks, blocks, seqs);
        if (at < 0) {
            if (lane == 0) atomicOr(err, 2u);
            break;
        }
        const float* kr = kc + ((u64)at * nkv + kvh) * dk;
        float s = 0.0f;
        for (u32 d = lane; d < dk; d += 32) s += qr[d] * kr[d];
        s = warp_sum(s) * scale;
        float m2 = fmaxf(m, s);
        float c = expf(m - m2), p = expf(s - m2);
        l = l * c + p;
        const float* vr = vc + ((u64)at * nkv + kvh) * dv;
        for (u32 d = lane, i = 0; d < dv; d += 32, i++) acc[i] = acc[i] * c + p * vr[d];
        m = m2;
    }
    float inv = l > 0.0f ? 1.0f / l : 0.0f;
    for (u32 d = lane, i = 0; d < dv; d += 32, i++) out[d] = acc[i] * inv;
}
