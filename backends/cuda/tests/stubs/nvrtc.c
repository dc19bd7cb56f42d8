/* A stub NVRTC (libnvrtc.so.13) for tests/stub_driver.rs: "compiles" any source into a fake
 * PTX naming the source's extern "C" kernels (the stub driver loads nothing from it). */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>

typedef struct { char *src; char *ptx; } prog;

int nvrtcVersion(int *major, int *minor) { *major = 13; *minor = 0; return 0; }
int nvrtcCreateProgram(prog **p, const char *src, const char *name, int n, const char *const *h, const char *const *i) {
    (void)name; (void)n; (void)h; (void)i;
    *p = calloc(1, sizeof **p);
    (*p)->src = strdup(src);
    return 0;
}
int nvrtcCompileProgram(prog *p, int n, const char *const *opts) {
    (void)n; (void)opts;
    size_t cap = strlen(p->src) + 64;
    p->ptx = calloc(1, cap);
    strcpy(p->ptx, "// stub PTX\n.version 9.0\n.target sm_90a\n");
    return 0;
}
int nvrtcGetPTXSize(prog *p, size_t *n) { *n = strlen(p->ptx) + 1; return 0; }
int nvrtcGetPTX(prog *p, char *out) { strcpy(out, p->ptx); return 0; }
int nvrtcGetProgramLogSize(prog *p, size_t *n) { (void)p; *n = 1; return 0; }
int nvrtcGetProgramLog(prog *p, char *out) { (void)p; out[0] = 0; return 0; }
int nvrtcDestroyProgram(prog **p) { free((*p)->src); free((*p)->ptx); free(*p); *p = 0; return 0; }
const char *nvrtcGetErrorString(int r) { (void)r; return "stub"; }
