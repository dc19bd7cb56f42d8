/* A logging stub of libascendcl.so: device memory is host memory (calloc), copies are
 * memcpy, streams and contexts are tokens; every call is logged (stub_log.h). Built by
 * tests/stub_calls.rs with gcc -shared. */
#include "finetp_acl.h"
#include "stub_log.h"

static __thread int current_device = -1;
int finetp_stub_device(void) { return current_device; }

aclError aclInit(const char *configPath) { (void)configPath; stub_log("aclInit"); return ACL_SUCCESS; }
aclError aclFinalize(void) { stub_log("aclFinalize"); return ACL_SUCCESS; }
const char *aclGetRecentErrMsg(void) { return ""; }
aclError aclrtGetDeviceCount(uint32_t *count) {
    const char *n = getenv("FINETP_STUB_DEVICES");
    *count = n ? (uint32_t)atoi(n) : 2;
    stub_log("aclrtGetDeviceCount count=%u", *count);
    return ACL_SUCCESS;
}
aclError aclrtSetDevice(int32_t deviceId) { current_device = deviceId; stub_log("aclrtSetDevice %d", deviceId); return ACL_SUCCESS; }
aclError aclrtResetDevice(int32_t deviceId) { stub_log("aclrtResetDevice %d", deviceId); return ACL_SUCCESS; }
const char *aclrtGetSocName(void) { return "StubSoc (logging stub)"; }
aclError aclrtGetMemInfo(aclrtMemAttr attr, size_t *free_, size_t *total) { (void)attr; *free_ = *total = (size_t)64 << 30; return ACL_SUCCESS; }
aclError aclrtCreateContext(aclrtContext *context, int32_t deviceId) { *context = malloc(1); stub_log("aclrtCreateContext %d", deviceId); return ACL_SUCCESS; }
aclError aclrtDestroyContext(aclrtContext context) { free(context); stub_log("aclrtDestroyContext"); return ACL_SUCCESS; }
aclError aclrtSetCurrentContext(aclrtContext context) { (void)context; return ACL_SUCCESS; }
aclError aclrtCreateStream(aclrtStream *stream) { *stream = malloc(1); stub_log("aclrtCreateStream %p", *stream); return ACL_SUCCESS; }
aclError aclrtDestroyStream(aclrtStream stream) { stub_log("aclrtDestroyStream %p", stream); free(stream); return ACL_SUCCESS; }
aclError aclrtSynchronizeStream(aclrtStream stream) { stub_log("aclrtSynchronizeStream %p", stream); return ACL_SUCCESS; }
aclError aclrtSynchronizeStreamWithTimeout(aclrtStream stream, int32_t timeout) {
    stub_log("aclrtSynchronizeStreamWithTimeout %p ms=%d", stream, timeout);
    return ACL_SUCCESS;
}
aclError aclrtMalloc(void **devPtr, size_t size, aclrtMemMallocPolicy policy) {
    (void)policy;
    *devPtr = calloc(1, size);
    stub_log("aclrtMalloc size=%zu ptr=%p", size, *devPtr);
    return *devPtr ? ACL_SUCCESS : 207001;
}
aclError aclrtFree(void *devPtr) { stub_log("aclrtFree ptr=%p", devPtr); free(devPtr); return ACL_SUCCESS; }
aclError aclrtMemcpy(void *dst, size_t destMax, const void *src, size_t count, aclrtMemcpyKind kind) {
    (void)destMax; memcpy(dst, src, count); stub_log("aclrtMemcpy kind=%d bytes=%zu", (int)kind, count); return ACL_SUCCESS;
}
aclError aclrtMemcpyAsync(void *dst, size_t destMax, const void *src, size_t count, aclrtMemcpyKind kind, aclrtStream stream) {
    (void)destMax; (void)stream; memcpy(dst, src, count); stub_log("aclrtMemcpyAsync kind=%d bytes=%zu", (int)kind, count); return ACL_SUCCESS;
}
aclError aclrtMemcpy2dAsync(void *dst, size_t dpitch, const void *src, size_t spitch, size_t width, size_t height,
                            aclrtMemcpyKind kind, aclrtStream stream) {
    (void)stream;
    for (size_t r = 0; r < height; r++) memcpy((char *)dst + r * dpitch, (const char *)src + r * spitch, width);
    stub_log("aclrtMemcpy2dAsync kind=%d width=%zu height=%zu", (int)kind, width, height);
    return ACL_SUCCESS;
}
aclError aclrtMemsetAsync(void *devPtr, size_t maxCount, int32_t value, size_t count, aclrtStream stream) {
    (void)maxCount; (void)stream; memset(devPtr, value, count); stub_log("aclrtMemsetAsync bytes=%zu", count); return ACL_SUCCESS;
}
aclError aclmdlRICaptureBegin(aclrtStream stream, aclmdlRICaptureMode mode) { stub_log("aclmdlRICaptureBegin %p mode=%d", stream, (int)mode); return ACL_SUCCESS; }
aclError aclmdlRICaptureEnd(aclrtStream stream, aclmdlRI *modelRI) { *modelRI = malloc(1); stub_log("aclmdlRICaptureEnd %p", stream); return ACL_SUCCESS; }
aclError aclmdlRIExecuteAsync(aclmdlRI modelRI, aclrtStream stream) { (void)modelRI; stub_log("aclmdlRIExecuteAsync %p", stream); return ACL_SUCCESS; }
aclError aclmdlRIDestroy(aclmdlRI modelRI) { free(modelRI); stub_log("aclmdlRIDestroy"); return ACL_SUCCESS; }
