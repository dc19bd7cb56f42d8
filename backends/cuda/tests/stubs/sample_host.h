/* Compiles the device sampler (src/cu/sample.cu) as host C for tests/sampler_on_host.rs: one
 * "thread" per block, so the block reductions are the identity and the kernel's own loops do
 * all the work; everything else is the kernel's code, unchanged (the test strips its
 * `extern "C"`, which C does not know). */
#include <math.h>
#include <stdbool.h>
#include <string.h>

typedef unsigned int u32;
typedef unsigned long long u64;

#define __device__
#define __forceinline__ static inline
#define __global__

static struct { u32 x; } threadIdx = {0}, blockDim = {1}, blockIdx = {0};
static inline void __syncthreads(void) {}
static inline u32 __float_as_uint(float f) { u32 u; memcpy(&u, &f, 4); return u; }
static inline float __uint_as_float(u32 u) { float f; memcpy(&f, &u, 4); return f; }
static inline double block_sum_f64(double v) { return v; }
static inline u64 block_max_u64(u64 v) { return v; }

/* Which block ("row") the next call computes. */
void finetp_host_set_block(u32 b) { blockIdx.x = b; }
