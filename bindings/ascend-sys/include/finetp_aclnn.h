/*
 * finetp's own declarations of the aclnn operator API it calls, written from Huawei's public
 * operator documentation (the "aclnn API" pages of CANN 8.x and the public ops-nn / ops-math
 * docs). No registry we can reach ships aclnn's headers, so these are always ours, with CANN
 * installed or not; a wrong declaration here is found only on an Ascend machine (see
 * docs/backends.md).
 *
 * Tensor descriptors and scalars come from libnnopbase.so; operators from libopapi.so, or, on
 * newer CANN, from the split libopapi_*.so (the loader looks in each).
 *
 * Every operator is called in two phases: aclnnXxxGetWorkspaceSize(inputs..., outputs...,
 * &workspaceSize, &executor) plans the call, then aclnnXxx(workspace, workspaceSize,
 * executor, stream) enqueues it on the stream with a device workspace of at least that size.
 */
#ifndef FINETP_ACLNN_H
#define FINETP_ACLNN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int32_t aclnnStatus;
typedef struct aclTensor aclTensor;
typedef struct aclScalar aclScalar;
typedef struct aclIntArray aclIntArray;
typedef struct aclOpExecutor aclOpExecutor;

/* libnnopbase: descriptors of device tensors (a view: dims, strides and offset in elements,
 * over a storage of storageDims at tensorData) and of host scalars. */
aclTensor *aclCreateTensor(const int64_t *viewDims, uint64_t viewDimsNum, aclDataType dataType,
                           const int64_t *stride, int64_t offset, aclFormat format,
                           const int64_t *storageDims, uint64_t storageDimsNum, void *tensorData);
aclnnStatus aclDestroyTensor(const aclTensor *tensor);
aclScalar *aclCreateScalar(void *value, aclDataType dataType);
aclnnStatus aclDestroyScalar(const aclScalar *scalar);
aclIntArray *aclCreateIntArray(const int64_t *value, uint64_t size);
aclnnStatus aclDestroyIntArray(const aclIntArray *array);

/* The execute phase, the same for every operator. */
#define FINETP_ACLNN_EXECUTE(name) \
    aclnnStatus name(void *workspace, uint64_t workspaceSize, aclOpExecutor *executor, aclrtStream stream)

/* out = self @ mat2 (1-6 dims, broadcast); cubeMathType 0 keeps the dtype's precision. */
aclnnStatus aclnnMatmulGetWorkspaceSize(const aclTensor *self, const aclTensor *mat2, aclTensor *out,
                                        int8_t cubeMathType, uint64_t *workspaceSize, aclOpExecutor **executor);
FINETP_ACLNN_EXECUTE(aclnnMatmul);

/* out[b] = self[b] @ mat2[b] (3 dims; a batch of 1 broadcasts): attention's parts. */
aclnnStatus aclnnBatchMatMulGetWorkspaceSize(const aclTensor *self, const aclTensor *mat2, aclTensor *out,
                                             int8_t cubeMathType, uint64_t *workspaceSize, aclOpExecutor **executor);
FINETP_ACLNN_EXECUTE(aclnnBatchMatMul);

/* W8A8: out = (x1 @ x2) * scale * pertokenScale (+ bias), int8 x1/x2. */
aclnnStatus aclnnQuantMatmulV4GetWorkspaceSize(const aclTensor *x1, const aclTensor *x2, const aclTensor *scale,
                                               const aclTensor *offset, const aclTensor *pertokenScale,
                                               const aclTensor *bias, bool transposeX1, bool transposeX2,
                                               const aclTensor *out, uint64_t *workspaceSize, aclOpExecutor **executor);
FINETP_ACLNN_EXECUTE(aclnnQuantMatmulV4);

/* W8A8's activations: per-token int8 yOut and its scales. */
aclnnStatus aclnnDynamicQuantGetWorkspaceSize(const aclTensor *x, const aclTensor *smoothScalesOptional,
                                              const aclTensor *yOut, const aclTensor *scaleOut,
                                              uint64_t *workspaceSize, aclOpExecutor **executor);
FINETP_ACLNN_EXECUTE(aclnnDynamicQuant);

/* W8A16: y = x @ ((weight + antiquantOffset) * antiquantScale) + bias. */
aclnnStatus aclnnWeightQuantBatchMatmulV2GetWorkspaceSize(const aclTensor *x, const aclTensor *weight,
                                                          const aclTensor *antiquantScale,
                                                          const aclTensor *antiquantOffsetOptional,
                                                          const aclTensor *quantScaleOptional,
                                                          const aclTensor *quantOffsetOptional,
                                                          const aclTensor *biasOptional, int antiquantGroupSize,
                                                          const aclTensor *y, uint64_t *workspaceSize,
                                                          aclOpExecutor **executor);
FINETP_ACLNN_EXECUTE(aclnnWeightQuantBatchMatmulV2);

/* yOut = x / sqrt(mean(x^2) + epsilon) * gamma over gamma's dims; rstdOut the 1/rms. */
aclnnStatus aclnnRmsNormGetWorkspaceSize(const aclTensor *x, const aclTensor *gamma, double epsilon,
                                         const aclTensor *yOut, const aclTensor *rstdOut,
                                         uint64_t *workspaceSize, aclOpExecutor **executor);
FINETP_ACLNN_EXECUTE(aclnnRmsNorm);

/* out = x * cos + rotate(x) * sin; mode 0 rotates halves (NeoX), 1 interleaved pairs (GPT-J). */
aclnnStatus aclnnRotaryPositionEmbeddingGetWorkspaceSize(const aclTensor *x, const aclTensor *cos,
                                                         const aclTensor *sin, int64_t mode, aclTensor *out,
                                                         uint64_t *workspaceSize, aclOpExecutor **executor);
FINETP_ACLNN_EXECUTE(aclnnRotaryPositionEmbedding);

/* out = softmax(self) along dim. */
aclnnStatus aclnnSoftmaxGetWorkspaceSize(const aclTensor *self, int64_t dim, aclTensor *out,
                                         uint64_t *workspaceSize, aclOpExecutor **executor);
FINETP_ACLNN_EXECUTE(aclnnSoftmax);

/* out = silu(self). */
aclnnStatus aclnnSiluGetWorkspaceSize(const aclTensor *self, aclTensor *out, uint64_t *workspaceSize,
                                      aclOpExecutor **executor);
FINETP_ACLNN_EXECUTE(aclnnSilu);

/* x split in two halves a, b along dim: out = silu(a) * b. */
aclnnStatus aclnnSwiGluGetWorkspaceSize(const aclTensor *x, int64_t dim, const aclTensor *out,
                                        uint64_t *workspaceSize, aclOpExecutor **executor);
FINETP_ACLNN_EXECUTE(aclnnSwiGlu);

/* out[i] = weight[indices[i]]. */
aclnnStatus aclnnEmbeddingGetWorkspaceSize(const aclTensor *weight, const aclTensor *indices, const aclTensor *out,
                                           uint64_t *workspaceSize, aclOpExecutor **executor);
FINETP_ACLNN_EXECUTE(aclnnEmbedding);

/* selfRef += alpha * other (broadcast). */
aclnnStatus aclnnInplaceAddGetWorkspaceSize(aclTensor *selfRef, const aclTensor *other, const aclScalar *alpha,
                                            uint64_t *workspaceSize, aclOpExecutor **executor);
FINETP_ACLNN_EXECUTE(aclnnInplaceAdd);

/* selfRef *= other (broadcast). */
aclnnStatus aclnnInplaceMulGetWorkspaceSize(aclTensor *selfRef, const aclTensor *other, uint64_t *workspaceSize,
                                            aclOpExecutor **executor);
FINETP_ACLNN_EXECUTE(aclnnInplaceMul);

/* out = argmax(self) along dim (int64). */
aclnnStatus aclnnArgMaxGetWorkspaceSize(const aclTensor *self, int64_t dim, bool keepdim, aclTensor *out,
                                        uint64_t *workspaceSize, aclOpExecutor **executor);
FINETP_ACLNN_EXECUTE(aclnnArgMax);

/* out = self converted to dtype. */
aclnnStatus aclnnCastGetWorkspaceSize(const aclTensor *self, const aclDataType dtype, aclTensor *out,
                                      uint64_t *workspaceSize, aclOpExecutor **executor);
FINETP_ACLNN_EXECUTE(aclnnCast);

#ifdef __cplusplus
}
#endif

#endif /* FINETP_ACLNN_H */
