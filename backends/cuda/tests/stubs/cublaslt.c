/* A stub cuBLASLt (libcublasLt.so.13) for tests/stub_driver.rs: descriptors are counters, the
 * heuristic always finds one algorithm, and every matmul is logged with its shape (from the
 * layouts: rows, cols) and stream; nothing is multiplied. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdarg.h>
#include <unistd.h>

#include "../../../../crates/finetp-testkit/stubs/stub_log.h"

typedef struct { int type; uint64_t rows, cols; int64_t ld; } layout;
typedef struct { uint64_t data[8]; size_t ws; int state; float waves; int reserved[4]; } heuristic;
typedef struct { int id; } sstream;

int cublasLtCreate(void **h) { *h = calloc(1, 8); return 0; }
int cublasLtDestroy(void *h) { free(h); return 0; }
int cublasLtMatmulDescCreate(void **d, int compute, int scale) { (void)compute; (void)scale; *d = calloc(1, 64); return 0; }
int cublasLtMatmulDescSetAttribute(void *d, int attr, const void *buf, size_t n) { (void)d; (void)attr; (void)buf; (void)n; return 0; }
int cublasLtMatmulDescDestroy(void *d) { free(d); return 0; }
int cublasLtMatrixLayoutCreate(layout **l, int type, uint64_t rows, uint64_t cols, int64_t ld) {
    *l = calloc(1, sizeof **l);
    (*l)->type = type; (*l)->rows = rows; (*l)->cols = cols; (*l)->ld = ld;
    return 0;
}
int cublasLtMatrixLayoutDestroy(layout *l) { free(l); return 0; }
int cublasLtMatmulPreferenceCreate(void **p) { *p = calloc(1, 8); return 0; }
int cublasLtMatmulPreferenceSetAttribute(void *p, int attr, const void *buf, size_t n) { (void)p; (void)attr; (void)buf; (void)n; return 0; }
int cublasLtMatmulPreferenceDestroy(void *p) { free(p); return 0; }
int cublasLtMatmulAlgoGetHeuristic(void *h, void *d, layout *a, layout *b, layout *c, layout *dd, void *p, int n, heuristic *out, int *count) {
    (void)h; (void)d; (void)a; (void)b; (void)c; (void)dd; (void)p; (void)n;
    memset(out, 0, sizeof *out);
    *count = 1;
    return 0;
}
int cublasLtMatmul(void *h, void *d, const void *alpha, const void *A, layout *a, const void *B, layout *b, const void *beta, const void *C, layout *c, void *D, layout *dl, const void *algo, void *ws, size_t wsn, sstream *s) {
    (void)h; (void)d; (void)alpha; (void)A; (void)B; (void)beta; (void)C; (void)c; (void)D; (void)algo; (void)ws;
    stub_log("cublasLtMatmul n=%llu m=%llu k=%llu type=%d out_type=%d workspace=%zu stream=%d", (unsigned long long)dl->rows, (unsigned long long)dl->cols, (unsigned long long)a->rows, a->type, dl->type, wsn, s ? s->id : 0);
    return 0;
}
