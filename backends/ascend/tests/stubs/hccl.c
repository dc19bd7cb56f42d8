/* A logging stub of libhccl.so: root info is made (distinct per call) and logged as a short
 * token, communicators are structs that remember their size and rank, and every collective
 * logs its counts and displacements. No data moves. */
#include "finetp_hccl.h"
#include "stub_log.h"

struct stub_comm { long id; uint32_t n, rank; char token[64]; };
static long next_comm = 1, next_root = 1;

static void counts(char *buf, size_t len, const void *arr, uint32_t n) {
    const uint64_t *a = arr;
    buf[0] = 0;
    for (uint32_t i = 0; i < n && strlen(buf) + 24 < len; i++)
        snprintf(buf + strlen(buf), len - strlen(buf), "%s%llu", i ? "," : "", (unsigned long long)a[i]);
}

HcclResult HcclGetRootInfo(HcclRootInfo *rootInfo) {
    memset(rootInfo->internal, 0, sizeof rootInfo->internal);
    long k = __atomic_fetch_add(&next_root, 1, __ATOMIC_RELAXED);
    snprintf(rootInfo->internal, 63, "root-%d-%ld", (int)getpid(), k);
    for (size_t i = 64; i < sizeof rootInfo->internal; i++) rootInfo->internal[i] = (char)(i * 7 + k);
    stub_log("HcclGetRootInfo token=%s", rootInfo->internal);
    return HCCL_SUCCESS;
}
HcclResult HcclCommInitRootInfo(uint32_t nRanks, const HcclRootInfo *rootInfo, uint32_t rank, HcclComm *comm) {
    struct stub_comm *c = malloc(sizeof *c);
    c->id = __atomic_fetch_add(&next_comm, 1, __ATOMIC_RELAXED); c->n = nRanks; c->rank = rank;
    snprintf(c->token, sizeof c->token, "%.63s", rootInfo->internal);
    unsigned long sum = 0;
    for (size_t i = 0; i < sizeof rootInfo->internal; i++) sum = sum * 31 + (unsigned char)rootInfo->internal[i];
    stub_log("HcclCommInitRootInfo nranks=%u rank=%u token=%s checksum=%lx comm=%ld", nRanks, rank, c->token, sum, c->id);
    *comm = c;
    return HCCL_SUCCESS;
}
HcclResult HcclCommDestroy(HcclComm comm) { stub_log("HcclCommDestroy comm=%ld", ((struct stub_comm *)comm)->id); free(comm); return HCCL_SUCCESS; }
HcclResult HcclGetRankSize(HcclComm comm, uint32_t *rankSize) { *rankSize = ((struct stub_comm *)comm)->n; return HCCL_SUCCESS; }
HcclResult HcclGetRankId(HcclComm comm, uint32_t *rank) { *rank = ((struct stub_comm *)comm)->rank; return HCCL_SUCCESS; }
const char *HcclGetErrorString(HcclResult code) { (void)code; return "stub error"; }
HcclResult HcclGetCommAsyncError(HcclComm comm, HcclResult *asyncError) { (void)comm; *asyncError = HCCL_SUCCESS; return HCCL_SUCCESS; }

#define C(comm) ((struct stub_comm *)(comm))
HcclResult HcclAllReduce(void *s, void *r, uint64_t count, HcclDataType dt, HcclReduceOp op, HcclComm comm, aclrtStream st) {
    (void)s; (void)r; (void)st; stub_log("HcclAllReduce comm=%ld count=%llu dtype=%d op=%d", C(comm)->id, (unsigned long long)count, (int)dt, (int)op); return HCCL_SUCCESS;
}
HcclResult HcclBroadcast(void *buf, uint64_t count, HcclDataType dt, uint32_t root, HcclComm comm, aclrtStream st) {
    (void)buf; (void)st; stub_log("HcclBroadcast comm=%ld count=%llu dtype=%d root=%u", C(comm)->id, (unsigned long long)count, (int)dt, root); return HCCL_SUCCESS;
}
HcclResult HcclAllGather(void *s, void *r, uint64_t sendCount, HcclDataType dt, HcclComm comm, aclrtStream st) {
    (void)s; (void)r; (void)st; stub_log("HcclAllGather comm=%ld send=%llu dtype=%d", C(comm)->id, (unsigned long long)sendCount, (int)dt); return HCCL_SUCCESS;
}
HcclResult HcclAllGatherV(void *s, uint64_t sendCount, void *r, const void *recvCounts, const void *recvDispls, HcclDataType dt, HcclComm comm, aclrtStream st) {
    (void)s; (void)r; (void)st;
    char rc[512], rd[512]; counts(rc, sizeof rc, recvCounts, C(comm)->n); counts(rd, sizeof rd, recvDispls, C(comm)->n);
    stub_log("HcclAllGatherV comm=%ld send=%llu recv_counts=%s recv_displs=%s dtype=%d", C(comm)->id, (unsigned long long)sendCount, rc, rd, (int)dt);
    return HCCL_SUCCESS;
}
HcclResult HcclReduceScatter(void *s, void *r, uint64_t recvCount, HcclDataType dt, HcclReduceOp op, HcclComm comm, aclrtStream st) {
    (void)s; (void)r; (void)st; stub_log("HcclReduceScatter comm=%ld recv=%llu dtype=%d op=%d", C(comm)->id, (unsigned long long)recvCount, (int)dt, (int)op); return HCCL_SUCCESS;
}
HcclResult HcclReduceScatterV(void *s, const void *sendCounts, const void *sendDispls, void *r, uint64_t recvCount, HcclDataType dt, HcclReduceOp op,
                              HcclComm comm, aclrtStream st) {
    (void)s; (void)r; (void)st;
    char sc[512], sd[512]; counts(sc, sizeof sc, sendCounts, C(comm)->n); counts(sd, sizeof sd, sendDispls, C(comm)->n);
    stub_log("HcclReduceScatterV comm=%ld send_counts=%s send_displs=%s recv=%llu dtype=%d op=%d", C(comm)->id, sc, sd, (unsigned long long)recvCount, (int)dt, (int)op);
    return HCCL_SUCCESS;
}
HcclResult HcclAlltoAll(const void *s, uint64_t sendCount, HcclDataType sdt, const void *r, uint64_t recvCount, HcclDataType rdt, HcclComm comm, aclrtStream st) {
    (void)s; (void)r; (void)st; stub_log("HcclAlltoAll comm=%ld send=%llu recv=%llu dtypes=%d,%d", C(comm)->id, (unsigned long long)sendCount, (unsigned long long)recvCount, (int)sdt, (int)rdt); return HCCL_SUCCESS;
}
HcclResult HcclAlltoAllV(const void *s, const void *sendCounts, const void *sdispls, HcclDataType sdt, const void *r, const void *recvCounts,
                         const void *rdispls, HcclDataType rdt, HcclComm comm, aclrtStream st) {
    (void)s; (void)r; (void)st;
    char sc[512], sd[512], rc[512], rd[512];
    counts(sc, sizeof sc, sendCounts, C(comm)->n); counts(sd, sizeof sd, sdispls, C(comm)->n);
    counts(rc, sizeof rc, recvCounts, C(comm)->n); counts(rd, sizeof rd, rdispls, C(comm)->n);
    stub_log("HcclAlltoAllV comm=%ld send_counts=%s send_displs=%s recv_counts=%s recv_displs=%s dtypes=%d,%d", C(comm)->id, sc, sd, rc, rd, (int)sdt, (int)rdt);
    return HCCL_SUCCESS;
}
HcclResult HcclBarrier(HcclComm comm, aclrtStream st) { (void)st; stub_log("HcclBarrier comm=%ld", C(comm)->id); return HCCL_SUCCESS; }
