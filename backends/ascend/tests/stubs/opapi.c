/* A logging stub of libopapi.so: every aclnnXxxGetWorkspaceSize makes an executor with an id
 * and asks for a workspace (a size per operator, some zero), and logs both; every aclnnXxx
 * logs the executor, workspace pointer and size it was given. No arithmetic is done. */
#include "finetp_acl.h"
#include "finetp_aclnn.h"
#include "stub_log.h"

struct aclOpExecutor { long id; const char *op; uint64_t ws; };
static long next_id = 1;

static aclnnStatus plan(const char *op, uint64_t ws, uint64_t *workspaceSize, aclOpExecutor **executor) {
    aclOpExecutor *e = malloc(sizeof *e);
    e->id = __atomic_fetch_add(&next_id, 1, __ATOMIC_RELAXED);
    e->op = op; e->ws = ws;
    *workspaceSize = ws; *executor = e;
    stub_log("plan op=%s exec=%ld ws=%llu", op, e->id, (unsigned long long)ws);
    return 0;
}
static aclnnStatus run(const char *op, void *workspace, uint64_t workspaceSize, aclOpExecutor *e) {
    stub_log("run op=%s exec=%ld ws=%llu wsptr=%p planned=%s", op, e->id, (unsigned long long)workspaceSize, workspace, e->op);
    free(e);
    return 0;
}
#define RUN(name) \
    aclnnStatus name(void *workspace, uint64_t workspaceSize, aclOpExecutor *executor, aclrtStream stream) { \
        (void)stream; return run(#name, workspace, workspaceSize, executor); }

aclnnStatus aclnnMatmulGetWorkspaceSize(const aclTensor *self, const aclTensor *mat2, aclTensor *out, int8_t cubeMathType,
                                        uint64_t *ws, aclOpExecutor **ex) {
    (void)self; (void)mat2; (void)out; (void)cubeMathType; return plan("aclnnMatmul", 4096, ws, ex);
}
RUN(aclnnMatmul)
aclnnStatus aclnnBatchMatMulGetWorkspaceSize(const aclTensor *self, const aclTensor *mat2, aclTensor *out, int8_t cubeMathType,
                                             uint64_t *ws, aclOpExecutor **ex) {
    (void)self; (void)mat2; (void)out; (void)cubeMathType; return plan("aclnnBatchMatMul", 4096, ws, ex);
}
RUN(aclnnBatchMatMul)
aclnnStatus aclnnQuantMatmulV4GetWorkspaceSize(const aclTensor *x1, const aclTensor *x2, const aclTensor *scale, const aclTensor *offset,
                                               const aclTensor *pertokenScale, const aclTensor *bias, bool transposeX1,
                                               bool transposeX2, const aclTensor *out, uint64_t *ws, aclOpExecutor **ex) {
    (void)x1; (void)x2; (void)scale; (void)offset; (void)pertokenScale; (void)bias; (void)transposeX1; (void)transposeX2; (void)out;
    return plan("aclnnQuantMatmulV4", 4096, ws, ex);
}
RUN(aclnnQuantMatmulV4)
aclnnStatus aclnnDynamicQuantGetWorkspaceSize(const aclTensor *x, const aclTensor *smooth, const aclTensor *yOut, const aclTensor *scaleOut,
                                              uint64_t *ws, aclOpExecutor **ex) {
    (void)x; (void)smooth; (void)yOut; (void)scaleOut; return plan("aclnnDynamicQuant", 0, ws, ex);
}
RUN(aclnnDynamicQuant)
aclnnStatus aclnnWeightQuantBatchMatmulV2GetWorkspaceSize(const aclTensor *x, const aclTensor *weight, const aclTensor *antiquantScale,
                                                          const aclTensor *antiquantOffsetOptional, const aclTensor *quantScaleOptional,
                                                          const aclTensor *quantOffsetOptional, const aclTensor *biasOptional,
                                                          int antiquantGroupSize, const aclTensor *y, uint64_t *ws, aclOpExecutor **ex) {
    (void)x; (void)weight; (void)antiquantScale; (void)antiquantOffsetOptional; (void)quantScaleOptional; (void)quantOffsetOptional;
    (void)biasOptional; (void)antiquantGroupSize; (void)y;
    return plan("aclnnWeightQuantBatchMatmulV2", 4096, ws, ex);
}
RUN(aclnnWeightQuantBatchMatmulV2)
aclnnStatus aclnnRmsNormGetWorkspaceSize(const aclTensor *x, const aclTensor *gamma, double epsilon, const aclTensor *yOut,
                                         const aclTensor *rstdOut, uint64_t *ws, aclOpExecutor **ex) {
    (void)x; (void)gamma; (void)yOut; (void)rstdOut;
    stub_log("rms_norm epsilon=%g", epsilon);
    return plan("aclnnRmsNorm", 256, ws, ex);
}
RUN(aclnnRmsNorm)
aclnnStatus aclnnRotaryPositionEmbeddingGetWorkspaceSize(const aclTensor *x, const aclTensor *cos, const aclTensor *sin, int64_t mode,
                                                         aclTensor *out, uint64_t *ws, aclOpExecutor **ex) {
    (void)x; (void)cos; (void)sin; (void)mode; (void)out; return plan("aclnnRotaryPositionEmbedding", 0, ws, ex);
}
RUN(aclnnRotaryPositionEmbedding)
aclnnStatus aclnnSoftmaxGetWorkspaceSize(const aclTensor *self, int64_t dim, aclTensor *out, uint64_t *ws, aclOpExecutor **ex) {
    (void)self; (void)dim; (void)out; return plan("aclnnSoftmax", 512, ws, ex);
}
RUN(aclnnSoftmax)
aclnnStatus aclnnSiluGetWorkspaceSize(const aclTensor *self, aclTensor *out, uint64_t *ws, aclOpExecutor **ex) {
    (void)self; (void)out; return plan("aclnnSilu", 0, ws, ex);
}
RUN(aclnnSilu)
aclnnStatus aclnnSwiGluGetWorkspaceSize(const aclTensor *x, int64_t dim, const aclTensor *out, uint64_t *ws, aclOpExecutor **ex) {
    (void)x; (void)out; stub_log("swiglu dim=%lld", (long long)dim); return plan("aclnnSwiGlu", 0, ws, ex);
}
RUN(aclnnSwiGlu)
aclnnStatus aclnnEmbeddingGetWorkspaceSize(const aclTensor *weight, const aclTensor *indices, const aclTensor *out, uint64_t *ws,
                                           aclOpExecutor **ex) {
    (void)weight; (void)indices; (void)out; return plan("aclnnEmbedding", 0, ws, ex);
}
RUN(aclnnEmbedding)
aclnnStatus aclnnInplaceAddGetWorkspaceSize(aclTensor *selfRef, const aclTensor *other, const aclScalar *alpha, uint64_t *ws,
                                            aclOpExecutor **ex) {
    (void)selfRef; (void)other; (void)alpha; return plan("aclnnInplaceAdd", 0, ws, ex);
}
RUN(aclnnInplaceAdd)
aclnnStatus aclnnInplaceMulGetWorkspaceSize(aclTensor *selfRef, const aclTensor *other, uint64_t *ws, aclOpExecutor **ex) {
    (void)selfRef; (void)other; return plan("aclnnInplaceMul", 0, ws, ex);
}
RUN(aclnnInplaceMul)
aclnnStatus aclnnArgMaxGetWorkspaceSize(const aclTensor *self, int64_t dim, bool keepdim, aclTensor *out, uint64_t *ws, aclOpExecutor **ex) {
    (void)self; (void)dim; (void)keepdim; (void)out; return plan("aclnnArgMax", 128, ws, ex);
}
RUN(aclnnArgMax)
aclnnStatus aclnnCastGetWorkspaceSize(const aclTensor *self, const aclDataType dtype, aclTensor *out, uint64_t *ws, aclOpExecutor **ex) {
    (void)self; (void)dtype; (void)out; return plan("aclnnCast", 0, ws, ex);
}
RUN(aclnnCast)
