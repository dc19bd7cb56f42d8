// Shared by every finetp CUDA kernel: fixed-width integer names, the weight dtypes a kernel may
// read (passed as an int so one kernel serves f32, bf16 and f16 tables), and warp/block
// reductions. No CUDA headers: NVRTC compiles this file alone, so f16/bf16 conversions are
// written out (bf16 is the high half of an f32; f16 goes through PTX's cvt).
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned long long u64;

#define INFINITY __int_as_float(0x7f800000)

#define DT_F32 0
#define DT_BF16 1
#define DT_F16 2

__device__ __forceinline__ float bf16_to_f32(u16 h) { return __uint_as_float(((u32)h) << 16); }

__device__ __forceinline__ u16 f32_to_bf16(float f) {
    u32 b = __float_as_uint(f);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (u16)((b >> 16) | 0x40u); // NaN stays NaN
    b += 0x7fffu + ((b >> 16) & 1u);                                       // round to nearest even
    return (u16)(b >> 16);
}

__device__ __forceinline__ float f16_to_f32(u16 h) {
    float f;
    asm("{ cvt.f32.f16 %0, %1; }" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ u16 f32_to_f16(float f) {
    u16 h;
    asm("{ cvt.rn.f16.f32 %0, %1; }" : "=h"(h) : "f"(f));
    return h;
}

// Element i of a float tensor of dtype dt, as f32.
__device__ __forceinline__ float load_any(const void* p, u64 i, int dt) {
    if (dt == DT_BF16) return bf16_to_f32(((const u16*)p)[i]);
    if (dt == DT_F16) return f16_to_f32(((const u16*)p)[i]);
    return ((const float*)p)[i];
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ double warp_sum_f64(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ u64 warp_max_u64(u64 v) {
    for (int o = 16; o > 0; o >>= 1) {
        u64 w = __shfl_xor_sync(0xffffffffu, v, o);
        v = w > v ? w : v;
    }
    return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ double block_sum_f64(double v) {
    __shared__ double part[32];
    __shared__ double total;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_sum_f64(v);
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        double s = lane < (int)(blockDim.x >> 5) ? part[lane] : 0.0;
        s = warp_sum_f64(s);
        if (lane == 0) total = s;
    }
    __syncthreads();
    return total;
}

__device__ u64 block_max_u64(u64 v) {
    __shared__ u64 part[32];
    __shared__ u64 best;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    v = warp_max_u64(v);
    __syncthreads();
    if (lane == 0) part[warp] = v;
    __syncthreads();
    if (warp == 0) {
        u64 s = lane < (int)(blockDim.x >> 5) ? part[lane] : 0ull;
        s = warp_max_u64(s);
        if (lane == 0) best = s;
    }
    __syncthreads();
    return best;
}
