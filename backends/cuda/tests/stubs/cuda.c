/* A stub NVIDIA driver (libcuda.so.1). With FINETP_STUB_GPUS unset or 0 it is a driver that
 * finds no GPU (cuInit answers CUDA_ERROR_NO_DEVICE): ci/cuda.sh checks finetp's message.
 * With FINETP_STUB_GPUS=1 it is one pretend sm_90 GPU whose memory is host memory: copies and
 * memsets really happen (outside captures), kernels and GEMMs do nothing, and every call is
 * logged to $FINETP_STUB_LOG for tests/stub_driver.rs. It keeps the rules of stream capture
 * the single-GPU path must respect, and fails a call that breaks them as the driver would:
 *   - a stream joins a capture only by waiting on an event recorded in it; waiting on an
 *     event of another capture, or a stream outside any capture waiting on one recorded
 *     inside, is an error (CUDA_ERROR_STREAM_CAPTURE_ISOLATION / _MERGE);
 *   - cuStreamEndCapture fails (CUDA_ERROR_STREAM_CAPTURE_UNJOINED) unless the origin stream
 *     has waited on an event recorded last on every stream that joined;
 *   - synchronising or querying a capturing stream, and cuMemFree while any capture runs, fail
 *     (CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED).
 * Declarations follow the CUDA driver API's public documentation; nothing of NVIDIA's is
 * copied. */
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#define OK 0
#define NO_DEVICE 100
#define CAPTURE_UNSUPPORTED 900
#define CAPTURE_INVALIDATED 901
#define CAPTURE_MERGE 902
#define CAPTURE_UNMATCHED 903
#define CAPTURE_UNJOINED 904
#define CAPTURE_ISOLATION 905

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

#include "../../../../crates/finetp-testkit/stubs/stub_log.h"

static int gpus(void) {
    const char *g = getenv("FINETP_STUB_GPUS");
    return g ? atoi(g) : 0;
}

typedef struct stream { int id, capture; unsigned long ops; int joined; } stream;
typedef struct event { int id; stream *on; int capture; unsigned long at; } event;
typedef struct func { char name[64]; } func;
typedef struct graph { int id, capture; } graph;

static int next_id = 1, next_capture = 1, captures_running = 0;
static stream *streams[256];
static int nstreams = 0;

static int op(stream *s) { s->ops++; s->joined = 0; return s->capture; }
static int sid(void *s) { return s ? ((stream *)s)->id : 0; }

int cuInit(unsigned f) { (void)f; stub_log("cuInit"); return gpus() > 0 ? OK : NO_DEVICE; }
int cuDriverGetVersion(int *v) { *v = 13000; return OK; }
int cuDeviceGetCount(int *n) { *n = gpus(); return gpus() > 0 ? OK : NO_DEVICE; }
int cuDeviceGet(int *d, int ordinal) { *d = ordinal; return OK; }
int cuDeviceGetName(char *name, int len, int d) { (void)d; snprintf(name, len, "finetp stub GPU"); return OK; }
int cuDeviceGetAttribute(int *v, int attr, int d) {
    (void)d;
    switch (attr) {
        case 75: *v = 9; break; /* compute capability major */
        case 76: *v = 0; break; /* minor */
        default: *v = 1; break; /* memory pools supported, and anything else asked */
    }
    return OK;
}
int cuDeviceTotalMem_v2(size_t *b, int d) { (void)d; *b = (size_t)80 << 30; return OK; }
int cuDevicePrimaryCtxRetain(void **ctx, int d) { (void)d; *ctx = (void *)0x1; return OK; }
int cuDevicePrimaryCtxRelease_v2(int d) { (void)d; return OK; }
static __thread void *current;
int cuCtxGetCurrent(void **ctx) { *ctx = current; return OK; }
int cuCtxSetCurrent(void *ctx) { current = ctx; return OK; }
int cuCtxSynchronize(void) { return OK; }
int cuMemGetInfo_v2(size_t *f, size_t *t) { *f = (size_t)70 << 30; *t = (size_t)80 << 30; return OK; }
int cuGetErrorName(int e, const char **s) { (void)e; *s = "CUDA_ERROR_STUB"; return OK; }
int cuGetErrorString(int e, const char **s) { (void)e; *s = "an error of the stub driver"; return OK; }

int cuStreamCreate(void **out, unsigned flags) {
    (void)flags;
    pthread_mutex_lock(&mu);
    stream *s = calloc(1, sizeof *s);
    s->id = next_id++;
    streams[nstreams++ % 256] = s;
    *out = s;
    pthread_mutex_unlock(&mu);
    stub_log("cuStreamCreate stream=%d", s->id);
    return OK;
}
int cuStreamDestroy_v2(void *s) { stub_log("cuStreamDestroy stream=%d", sid(s)); return OK; }
int cuStreamSynchronize(void *s) {
    stream *st = s;
    if (st && st->capture) { stub_log("ERROR cuStreamSynchronize stream=%d during a capture", st->id); return CAPTURE_UNSUPPORTED; }
    return OK;
}
int cuStreamQuery(void *s) {
    stream *st = s;
    if (st && st->capture) { stub_log("ERROR cuStreamQuery stream=%d during a capture", st->id); return CAPTURE_UNSUPPORTED; }
    return OK;
}

int cuEventCreate(void **out, unsigned flags) {
    (void)flags;
    pthread_mutex_lock(&mu);
    event *e = calloc(1, sizeof *e);
    e->id = next_id++;
    pthread_mutex_unlock(&mu);
    *out = e;
    return OK;
}
int cuEventDestroy_v2(void *e) { (void)e; return OK; } /* kept: a later wait on it is a bug the log shows */
int cuEventRecord(void *ev, void *s) {
    event *e = ev;
    stream *st = s;
    pthread_mutex_lock(&mu);
    e->on = st;
    e->capture = st->capture;
    st->ops++;
    st->joined = 0;
    e->at = st->ops;
    pthread_mutex_unlock(&mu);
    stub_log("cuEventRecord event=%d stream=%d capture=%d", e->id, st->id, e->capture);
    return OK;
}
int cuEventQuery(void *e) { (void)e; return OK; }
int cuEventSynchronize(void *e) { (void)e; return OK; }
int cuStreamWaitEvent(void *s, void *ev, unsigned flags) {
    (void)flags;
    stream *st = s;
    event *e = ev;
    int r = OK;
    pthread_mutex_lock(&mu);
    if (e->capture && st->capture && st->capture != e->capture) r = CAPTURE_MERGE;
    else if (e->capture && !st->capture) {
        /* Joining: only while the event's capture still runs (its origin has not ended it). */
        int running = 0;
        for (int i = 0; i < nstreams && i < 256; i++) running |= streams[i]->capture == e->capture;
        if (running) st->capture = e->capture; else r = CAPTURE_ISOLATION;
    }
    if (r == OK) {
        st->ops++;
        st->joined = 0;
        /* The origin waiting on the last thing another stream of its capture did joins it. */
        if (st->capture && e->on && e->on != st && e->on->capture == st->capture && e->at == e->on->ops) e->on->joined = 1;
    }
    pthread_mutex_unlock(&mu);
    stub_log("cuStreamWaitEvent stream=%d event=%d recorded_on=%d capture=%d%s", st->id, e->id, sid(e->on), st->capture, r ? " ERROR" : "");
    return r;
}

int cuStreamBeginCapture_v2(void *s, int mode) {
    stream *st = s;
    pthread_mutex_lock(&mu);
    int r = st->capture ? CAPTURE_UNSUPPORTED : OK;
    if (!r) { st->capture = next_capture++; st->joined = 1; captures_running++; }
    pthread_mutex_unlock(&mu);
    stub_log("cuStreamBeginCapture stream=%d mode=%d capture=%d%s", st->id, mode, st->capture, r ? " ERROR" : "");
    return r;
}
int cuStreamIsCapturing(void *s, int *status) { *status = ((stream *)s)->capture ? 1 : 0; return OK; }
int cuStreamEndCapture(void *s, void **g) {
    stream *st = s;
    pthread_mutex_lock(&mu);
    int c = st->capture, r = c ? OK : CAPTURE_UNMATCHED, members = 0;
    for (int i = 0; r == OK && i < nstreams && i < 256; i++) {
        stream *o = streams[i];
        if (o != st && o->capture == c) {
            members++;
            if (!o->joined) { r = CAPTURE_UNJOINED; stub_log("ERROR cuStreamEndCapture: stream %d of capture %d is not joined", o->id, c); }
        }
    }
    for (int i = 0; i < nstreams && i < 256; i++) if (streams[i]->capture == c) streams[i]->capture = 0;
    if (c) captures_running--;
    graph *gr = calloc(1, sizeof *gr);
    gr->id = next_id++;
    gr->capture = c;
    *g = gr;
    pthread_mutex_unlock(&mu);
    stub_log("cuStreamEndCapture stream=%d capture=%d joined_streams=%d graph=%d%s", st->id, c, members, gr->id, r ? " ERROR" : "");
    return r;
}
int cuGraphInstantiateWithFlags(void **exec, void *g, unsigned long long flags) { (void)flags; *exec = g; return OK; }
int cuGraphLaunch(void *exec, void *s) { stream *st = s; op(st); stub_log("cuGraphLaunch graph=%d stream=%d", ((graph *)exec)->id, st->id); return OK; }
int cuGraphUpload(void *exec, void *s) { (void)exec; (void)s; return OK; }
int cuGraphExecDestroy(void *e) { (void)e; return OK; }
int cuGraphDestroy(void *g) { stub_log("cuGraphDestroy graph=%d", ((graph *)g)->id); return OK; }

int cuDeviceGetDefaultMemPool(void **pool, int d) { (void)d; *pool = (void *)0x3; return OK; }
int cuMemPoolSetAttribute(void *pool, int attr, void *v) { (void)pool; stub_log("cuMemPoolSetAttribute attr=%d value=%llu", attr, *(unsigned long long *)v); return OK; }
int cuMemAlloc_v2(uint64_t *p, size_t n) { *p = (uint64_t)(uintptr_t)calloc(1, n + 16); return OK; }
int cuMemAllocAsync(uint64_t *p, size_t n, void *s) {
    stream *st = s;
    int c = op(st);
    *p = (uint64_t)(uintptr_t)calloc(1, n + 16);
    if (c) stub_log("ERROR cuMemAllocAsync stream=%d inside capture %d", st->id, c);
    return c ? CAPTURE_UNSUPPORTED : OK;
}
int cuMemFreeAsync(uint64_t p, void *s) {
    stream *st = s;
    int c = op(st);
    if (c) { stub_log("ERROR cuMemFreeAsync stream=%d inside capture %d", st->id, c); return CAPTURE_UNSUPPORTED; }
    free((void *)(uintptr_t)p);
    return OK;
}
int cuMemFree_v2(uint64_t p) {
    if (captures_running) { stub_log("ERROR cuMemFree while a capture runs"); return CAPTURE_UNSUPPORTED; }
    free((void *)(uintptr_t)p);
    return OK;
}
int cuMemsetD8_v2(uint64_t p, unsigned char v, size_t n) { memset((void *)(uintptr_t)p, v, n); return OK; }
int cuMemsetD8Async(uint64_t p, unsigned char v, size_t n, void *s) { if (!op(s)) memset((void *)(uintptr_t)p, v, n); return OK; }
int cuMemcpyHtoDAsync_v2(uint64_t d, const void *h, size_t n, void *s) {
    stream *st = s;
    if (op(st)) { stub_log("ERROR cuMemcpyHtoDAsync stream=%d inside a capture", st->id); return CAPTURE_UNSUPPORTED; }
    memcpy((void *)(uintptr_t)d, h, n);
    return OK;
}
int cuMemcpyDtoHAsync_v2(void *h, uint64_t d, size_t n, void *s) {
    stream *st = s;
    if (op(st)) { stub_log("ERROR cuMemcpyDtoHAsync stream=%d inside a capture", st->id); return CAPTURE_UNSUPPORTED; }
    memcpy(h, (void *)(uintptr_t)d, n);
    return OK;
}
int cuMemcpyDtoH_v2(void *h, uint64_t d, size_t n) { memcpy(h, (void *)(uintptr_t)d, n); return OK; }
int cuMemcpyHtoD_v2(uint64_t d, const void *h, size_t n) { memcpy((void *)(uintptr_t)d, h, n); return OK; }
int cuMemcpyDtoDAsync_v2(uint64_t d, uint64_t s_, size_t n, void *s) {
    stream *st = s;
    int c = op(st);
    if (!c) memmove((void *)(uintptr_t)d, (void *)(uintptr_t)s_, n);
    stub_log("cuMemcpyDtoDAsync stream=%d bytes=%zu capture=%d", st->id, n, c);
    return OK;
}
typedef struct {
    size_t srcXInBytes, srcY; int srcMemoryType; const void *srcHost; uint64_t srcDevice; void *srcArray; size_t srcPitch;
    size_t dstXInBytes, dstY; int dstMemoryType; void *dstHost; uint64_t dstDevice; void *dstArray; size_t dstPitch;
    size_t WidthInBytes, Height;
} memcpy2d;
int cuMemcpy2DAsync_v2(const memcpy2d *p, void *s) {
    if (!op(s))
        for (size_t r = 0; r < p->Height; r++)
            memmove((char *)(uintptr_t)p->dstDevice + r * p->dstPitch, (const char *)(uintptr_t)p->srcDevice + r * p->srcPitch, p->WidthInBytes);
    return OK;
}

int cuModuleLoadData(void **m, const void *image) {
    stub_log("cuModuleLoadData ptx_bytes=%zu", strlen(image));
    *m = (void *)0x2;
    return OK;
}
int cuModuleGetFunction(void **f, void *m, const char *name) {
    (void)m;
    func *fn = calloc(1, sizeof *fn);
    snprintf(fn->name, sizeof fn->name, "%s", name);
    *f = fn;
    return OK;
}
int cuModuleUnload(void *m) { (void)m; return OK; }
int cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz, unsigned shmem, void *s, void **params, void **extra) {
    (void)gz; (void)by; (void)bz; (void)shmem; (void)params; (void)extra;
    stream *st = s;
    int c = op(st);
    stub_log("cuLaunchKernel kernel=%s grid=%ux%u block=%u stream=%d capture=%d", ((func *)f)->name, gx, gy, bx, st->id, c);
    return OK;
}
