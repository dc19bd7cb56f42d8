// Picking one token per logits row on the device, exactly as the contract (and the CPU
// reference, backends/cpu/src/kernels/sampling.rs) states, with no host round trip, so the
// whole decode step, sampling included, is one CUDA graph.
//
// Candidates are ordered by a 64-bit key: the logit's order-preserving bits (NaN lowest,
// -0 as +0) above the inverted id, so larger keys come first and equal logits go by lower id;
// the weight exp((l - max) / T) is monotone in the logit, so this is the contract's order
// by weight. Every cut the contract makes (the top_k-th candidate, the end of the top_p
// prefix, the candidate where the running weight reaches uniform x mass) is "the largest key
// whose prefix (keys >= it) has at least this much count or weight": a binary search over the
// key, each probe one pass over the row summed in f64. One block per row.

__device__ __forceinline__ u64 sample_key(float l, u32 id) {
    u32 hi;
    if (l != l) hi = 0u;
    else {
        u32 b = l == 0.0f ? 0u : __float_as_uint(l);
        hi = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
    }
    return ((u64)hi << 32) | (u64)(0xffffffffu - id);
}

__device__ __forceinline__ double sample_weight(float l, float m, double t) {
    if (l != l) return 0.0;
    if (m == INFINITY) return l == INFINITY ? 1.0 : 0.0;
    return exp(((double)l - (double)m) / t);
}

// Sum over candidates with key >= k of their weight (counting: of 1). `w`: the row's weights.
__device__ double sample_prefix(const float* row, const double* w, u32 v, u64 k, bool counting) {
    double s = 0.0;
    for (u32 i = threadIdx.x; i < v; i += blockDim.x)
        if (sample_key(row[i], i) >= k) s += counting ? 1.0 : w[i];
    return block_sum_f64(s);
}

// The largest key K in [lo, hi] (both real candidates' keys, hi the best) whose prefix holds
// at least `goal`; `hi` when the goal is not positive (the empty cut: the best candidate), `lo`
// when no prefix reaches it (rounding, or NaN weights).
__device__ u64 sample_search(const float* row, const double* w, u32 v, u64 lo, u64 hi, double goal, bool counting) {
    if (!(goal > 0.0)) return hi;
    u64 top = hi;
    while (lo < hi) {
        u64 d = hi - lo;
        u64 mid = lo + d / 2 + (d & 1ull);
        if (sample_prefix(row, w, v, mid, counting) >= goal) lo = mid;
        else hi = mid - 1;
    }
    return lo > top ? top : lo;
}

__device__ __forceinline__ u32 sample_id(u64 key) { return 0xffffffffu - (u32)(key & 0xffffffffull); }

// logits: f32 [m, v]; params: f32 [m, 4] (temperature, top_p, top_k, uniform); ids: u32 [m];
// scratch: f64 [m, v] (each row's weights, computed once).
extern "C" __global__ void finetp_sample(const float* logits, const float* params, u32* ids, u32 rows, u32 v, double* scratch) {
    u32 r = blockIdx.x;
    if (r >= rows) return;
    const float* row = logits + (u64)r * v;
    const float* p = params + (u64)r * 4;
    u64 best = 0, worst_inv = 0;
    for (u32 i = threadIdx.x; i < v; i += blockDim.x) {
        u64 k = sample_key(row[i], i);
        best = k > best ? k : best;
        worst_inv = ~k > worst_inv ? ~k : worst_inv;
    }
    best = block_max_u64(best);
    u64 worst = ~block_max_u64(worst_inv);
    float temperature = p[0];
    if (!(temperature > 0.0f)) { // greedy, NaN included: the first largest logit
        if (threadIdx.x == 0) ids[r] = sample_id(best);
        return;
    }
    u32 hi = (u32)(best >> 32);
    float m = hi == 0u ? -INFINITY : __uint_as_float((hi & 0x80000000u) ? (hi & 0x7fffffffu) : ~hi);
    double t = (double)temperature;
    double* w = scratch + (u64)r * v;
    for (u32 i = threadIdx.x; i < v; i += blockDim.x) w[i] = sample_weight(row[i], m, t);
    __syncthreads();
    u32 top_k = (u32)p[2];
    u64 floor = worst;
    if (top_k > 0 && top_k < v) floor = sample_search(row, w, v, worst, best, (double)top_k, true);
    double kept = sample_prefix(row, w, v, floor, false);
    float tp = p[1];
    double top_p = tp != tp ? 1.0 : (double)fminf(fmaxf(tp, 0.0f), 1.0f);
    u64 end = sample_search(row, w, v, floor, best, top_p * kept, false);
    double mass = sample_prefix(row, w, v, end, false);
    double u = (double)fminf(fmaxf(p[3], 0.0f), 1.0f) * mass;
    u64 pick = sample_search(row, w, v, end, best, u, false);
    if (threadIdx.x == 0) ids[r] = sample_id(pick);
}
