/* A logging stub of libnnopbase.so: descriptors are small structs; their creation is logged. */
#include "finetp_acl.h"
#include "finetp_aclnn.h"
#include "stub_log.h"

struct aclTensor { void *data; int64_t offset; int dtype; };
struct aclScalar { float value; };
struct aclIntArray { int unused; };

aclTensor *aclCreateTensor(const int64_t *viewDims, uint64_t viewDimsNum, aclDataType dataType, const int64_t *stride,
                           int64_t offset, aclFormat format, const int64_t *storageDims, uint64_t storageDimsNum,
                           void *tensorData) {
    (void)stride; (void)format; (void)storageDims; (void)storageDimsNum;
    aclTensor *t = malloc(sizeof *t);
    t->data = tensorData; t->offset = offset; t->dtype = (int)dataType;
    char dims[256] = "";
    for (uint64_t i = 0; i < viewDimsNum && strlen(dims) < 200; i++)
        snprintf(dims + strlen(dims), sizeof dims - strlen(dims), "%s%lld", i ? "x" : "", (long long)viewDims[i]);
    stub_log("aclCreateTensor dims=%s dtype=%d data=%p offset=%lld", dims, (int)dataType, tensorData, (long long)offset);
    return t;
}
aclnnStatus aclDestroyTensor(const aclTensor *tensor) { free((void *)tensor); return 0; }
aclScalar *aclCreateScalar(void *value, aclDataType dataType) {
    (void)dataType; aclScalar *s = malloc(sizeof *s); s->value = *(float *)value; return s;
}
aclnnStatus aclDestroyScalar(const aclScalar *scalar) { free((void *)scalar); return 0; }
aclIntArray *aclCreateIntArray(const int64_t *value, uint64_t size) { (void)value; (void)size; return malloc(sizeof(aclIntArray)); }
aclnnStatus aclDestroyIntArray(const aclIntArray *array) { free((void *)array); return 0; }
