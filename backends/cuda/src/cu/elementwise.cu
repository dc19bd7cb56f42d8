// Row-wise and element-wise kernels: RMSNorm, SiLU-mul, add, bias, casts, the vocab-parallel
// embedding, and the sums the single-GPU and NCCL collectives need.

// y[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w; one block per row, the sum of squares in f64 (as
// the CPU reference). x, y: f32 [rows, h]; w: dtype wdt [h].
extern "C" __global__ void finetp_rms_norm(const float* x, const void* w, int wdt, float eps, float* y, u32 rows, u32 h) {
    u32 r = blockIdx.x;
    if (r >= rows) return;
    const float* xr = x + (u64)r * h;
    double s = 0.0;
    for (u32 i = threadIdx.x; i < h; i += blockDim.x) s += (double)xr[i] * (double)xr[i];
    s = block_sum_f64(s);
    float inv = (float)(1.0 / sqrt(s / (double)h + (double)eps));
    for (u32 i = threadIdx.x; i < h; i += blockDim.x) y[(u64)r * h + i] = xr[i] * inv * load_any(w, i, wdt);
}

// y[t, i] = silu(gu[t, i]) * gu[t, inter + i]. gu: f32 [t, 2 inter]; y: f32 [t, inter].
extern "C" __global__ void finetp_silu_mul(const float* gu, float* y, u32 t, u32 inter) {
    u64 n = (u64)t * inter;
    for (u64 k = blockIdx.x * (u64)blockDim.x + threadIdx.x; k < n; k += (u64)gridDim.x * blockDim.x) {
        u64 row = k / inter, i = k % inter;
        float g = gu[row * 2 * inter + i], u = gu[row * 2 * inter + inter + i];
        y[k] = g / (1.0f + expf(-g)) * u;
    }
}

// a += b over n f32.
extern "C" __global__ void finetp_add_f32(float* a, const float* b, u64 n) {
    for (u64 k = blockIdx.x * (u64)blockDim.x + threadIdx.x; k < n; k += (u64)gridDim.x * blockDim.x) a[k] += b[k];
}

// a += b over n u32 (wrapping, as the CPU's all-reduce of u32).
extern "C" __global__ void finetp_add_u32(u32* a, const u32* b, u64 n) {
    for (u64 k = blockIdx.x * (u64)blockDim.x + threadIdx.x; k < n; k += (u64)gridDim.x * blockDim.x) a[k] += b[k];
}

// out[i] = sum over p < parts of staging[p * len + i] (NCCL's uneven reduce-scatter: every
// member's block for this rank, received side by side, then summed here in member order).
extern "C" __global__ void finetp_sum_parts_f32(float* out, const float* staging, u32 parts, u64 len) {
    for (u64 k = blockIdx.x * (u64)blockDim.x + threadIdx.x; k < len; k += (u64)gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (u32 p = 0; p < parts; p++) s += staging[(u64)p * len + k];
        out[k] = s;
    }
}

// y[r, c] += bias[c]. y: f32 [m, n]; bias: f32 [n].
extern "C" __global__ void finetp_add_bias(float* y, const float* bias, u32 m, u32 n) {
    u64 total = (u64)m * n;
    for (u64 k = blockIdx.x * (u64)blockDim.x + threadIdx.x; k < total; k += (u64)gridDim.x * blockDim.x) y[k] += bias[k % n];
}

// GEMM inputs for bf16 weights: x split into `parts` bf16 planes, plane p holding what planes
// 0..p left of x, rounded to nearest: x = hi + mid + lo exactly for three planes (3 x 8 bits
// of mantissa, bf16 having f32's exponent range), so one GEMM over the [parts m, k] planes,
// accumulated in f32 and its planes summed, multiplies the f32 activations by the bf16 weights
// as an f32 GEMM would. x: f32 [n]; y: bf16 [parts, n].
extern "C" __global__ void finetp_split_bf16(const float* x, u16* y, u64 n, u32 parts) {
    for (u64 k = blockIdx.x * (u64)blockDim.x + threadIdx.x; k < n; k += (u64)gridDim.x * blockDim.x) {
        float r = x[k];
        for (u32 p = 0; p < parts; p++) {
            u16 h = f32_to_bf16(r);
            y[(u64)p * n + k] = h;
            r -= bf16_to_f32(h);
        }
    }
}

// f16 weights widened to f32 (exact) for an f32 GEMM: f16's exponent range cannot hold the
// activations' residual planes, so f16 weights take this slower, exact path.
extern "C" __global__ void finetp_widen_f16(const u16* w, float* y, u64 n) {
    for (u64 k = blockIdx.x * (u64)blockDim.x + threadIdx.x; k < n; k += (u64)gridDim.x * blockDim.x) y[k] = f16_to_f32(w[k]);
}

// Vocab-parallel lookup: y[t] = table[ids[t] - row_start] when the id is in this shard's
// rows, else zeros. ids: u32 [t]; table: dtype tdt [rows, h]; y: f32 [t, h]. One block a row.
extern "C" __global__ void finetp_embedding(const u32* ids, const void* table, int tdt, u32 row_start, u32 rows, u32 h, float* y, u32 t) {
    u32 r = blockIdx.x;
    if (r >= t) return;
    u32 id = ids[r];
    bool mine = id >= row_start && id - row_start < rows;
    u64 base = (u64)(id - row_start) * h;
    for (u32 i = threadIdx.x; i < h; i += blockDim.x) y[(u64)r * h + i] = mine ? load_any(table, base + i, tdt) : 0.0f;
}

// Rotates x [t, nh, hd] in place: pair i (Neox: i with i + rd/2; interleaved: 2i with 2i+1) of
// every head of row r turns by positions[r] * inv_freq[i], the angle rounded to f32 as HF does,
// cos and sin times the attention factor. One block per (row, head).
extern "C" __global__ void finetp_rope(float* x, const u32* positions, const float* inv_freq, u32 t, u32 nh, u32 hd, u32 half, int interleaved, float factor) {
    u32 r = blockIdx.x, h = blockIdx.y;
    if (r >= t || h >= nh) return;
    float* v = x + ((u64)r * nh + h) * hd;
    float p = (float)positions[r];
    for (u32 i = threadIdx.x; i < half; i += blockDim.x) {
        float s, c;
        sincosf(p * inv_freq[i], &s, &c);
        s *= factor;
        c *= factor;
        u32 a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
        float x0 = v[a], x1 = v[b];
        v[a] = x0 * c - x1 * s;
        v[b] = x0 * s + x1 * c;
    }
}
