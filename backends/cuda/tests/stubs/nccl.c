/* A logging stub of NCCL (libnccl.so.2): the functions finetp resolves, each writing one line
 * to $FINETP_STUB_LOG. tests/stub_nccl.rs calls it with made-up addresses and it moves no
 * data; with FINETP_STUB_NCCL_MOVE=1 (tests/stub_driver.rs, whose stub driver's device memory
 * is host memory and whose ranks are threads of one process) it really moves the data, each
 * collective a rendezvous of the communicator's members at the call, grouped sends and
 * receives matched at ncclGroupEnd, so the engine's steps see the values they exchange. Unique ids carry a
 * token (a counter) and a checksum of the id, so the test can tell which group a
 * communicator joined and that every member got the same bytes. The calling test thread names
 * its rank with finetp_stub_set_rank (thread-local), which every line starts with. Lines are
 * written whole with one write(2) on an O_APPEND descriptor. Declarations follow nccl.h
 * (BSD-3); nothing of NCCL's is copied. */
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>

typedef struct { char internal[128]; } ncclUniqueId;
typedef struct stub_comm { unsigned token; int rank, nranks; } *ncclComm_t;
typedef int ncclResult_t;

static __thread int my_rank = -1;
void finetp_stub_set_rank(int r) { my_rank = r; }
#define STUB_PREFIX(buf, n) snprintf(buf, n, "rank=%d ", my_rank)
#include "../../../../crates/finetp-testkit/stubs/stub_log.h"

static unsigned checksum(const ncclUniqueId *id) {
    unsigned s = 2166136261u;
    for (int i = 0; i < 128; i++) s = (s ^ (unsigned char)id->internal[i]) * 16777619u;
    return s;
}


static int moving(void) { const char *m = getenv("FINETP_STUB_NCCL_MOVE"); return m && m[0] == '1'; }

static size_t dsize(int dt) {
    switch (dt) { case 0: case 1: return 1; case 6: case 9: return 2; case 4: case 5: case 8: return 8; default: return 4; }
}

/* One rendezvous per communicator (by token): members post their buffers, the last one to
 * arrive releases them, each does its own part, and a second meeting keeps the buffers alive
 * until every member is done. */
typedef struct meet { unsigned token; int arrived, gen; const void *send[64]; void *recv[64]; } meet_t;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static meet_t meets[64];

static meet_t *meet_of(unsigned token) {
    for (int i = 0; i < 64; i++) if (meets[i].token == token) return &meets[i];
    for (int i = 0; i < 64; i++) if (meets[i].token == 0) { meets[i].token = token; return &meets[i]; }
    abort();
}

/* Waits (with mu held) until all `n` members have arrived at this meeting. */
static void barrier(meet_t *m, int n) {
    int gen = m->gen;
    if (++m->arrived == n) { m->arrived = 0; m->gen++; pthread_cond_broadcast(&cv); return; }
    while (m->gen == gen) pthread_cond_wait(&cv, &mu);
}

static void sum_into(void *dst, const void *src, size_t n, int dt) {
    if (dt == 7) for (size_t i = 0; i < n; i++) ((float *)dst)[i] += ((const float *)src)[i];
    else if (dt == 3 || dt == 2) for (size_t i = 0; i < n; i++) ((unsigned *)dst)[i] += ((const unsigned *)src)[i];
}

/* Mailbox of grouped sends, matched by (token, from, to) in order. */
typedef struct mail { unsigned token; int from, to; const void *buf; size_t bytes; int taken; struct mail *next; } mail_t;
static mail_t *mailbox;
typedef struct pend { int send; void *buf; size_t bytes; int peer; struct stub_comm *c; } pend_t;
static __thread pend_t pending[256];
static __thread int npending = 0, in_group = 0;

ncclResult_t ncclGetVersion(int *v) { *v = 22703; return 0; }

ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
    static unsigned next = 100;
    unsigned token = __sync_fetch_and_add(&next, 1);
    memset(id, 0, sizeof *id);
    memcpy(id->internal, &token, sizeof token);
    for (int i = 4; i < 128; i++) id->internal[i] = (char)(i * 7 + token);
    stub_log("ncclGetUniqueId token=%u checksum=%u", token, checksum(id));
    return 0;
}

ncclResult_t ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank) {
    struct stub_comm *c = malloc(sizeof *c);
    memcpy(&c->token, id.internal, sizeof c->token);
    c->rank = rank;
    c->nranks = nranks;
    *comm = c;
    stub_log("ncclCommInitRank token=%u checksum=%u nranks=%d member=%d", c->token, checksum(&id), nranks, rank);
    return 0;
}

ncclResult_t ncclCommDestroy(ncclComm_t c) { stub_log("ncclCommDestroy token=%u", c->token); free(c); return 0; }
ncclResult_t ncclCommAbort(ncclComm_t c) { stub_log("ncclCommAbort token=%u", c->token); return 0; }
ncclResult_t ncclCommGetAsyncError(ncclComm_t c, ncclResult_t *e) { (void)c; *e = 0; return 0; }
const char *ncclGetErrorString(ncclResult_t r) { (void)r; return "stub error"; }

#define COMM(c) "token=%u member=%d", (c)->token, (c)->rank

ncclResult_t ncclAllReduce(const void *s, void *r, size_t n, int dt, int op, ncclComm_t c, void *st) {
    (void)s; (void)r; (void)st;
    stub_log("ncclAllReduce token=%u member=%d count=%zu dtype=%d op=%d", c->token, c->rank, n, dt, op);
    if (!moving()) return 0;
    pthread_mutex_lock(&mu);
    meet_t *m = meet_of(c->token);
    m->send[c->rank] = s;
    barrier(m, c->nranks);
    void *acc = calloc(n, dsize(dt));
    for (int j = 0; j < c->nranks; j++) sum_into(acc, m->send[j], n, dt);
    barrier(m, c->nranks);
    memcpy(r, acc, n * dsize(dt));
    free(acc);
    pthread_mutex_unlock(&mu);
    return 0;
}
ncclResult_t ncclAllGather(const void *s, void *r, size_t n, int dt, ncclComm_t c, void *st) {
    (void)s; (void)r; (void)st;
    stub_log("ncclAllGather token=%u member=%d count=%zu dtype=%d", c->token, c->rank, n, dt);
    if (!moving()) return 0;
    pthread_mutex_lock(&mu);
    meet_t *m = meet_of(c->token);
    m->send[c->rank] = s;
    barrier(m, c->nranks);
    for (int j = 0; j < c->nranks; j++) memcpy((char *)r + j * n * dsize(dt), m->send[j], n * dsize(dt));
    barrier(m, c->nranks);
    pthread_mutex_unlock(&mu);
    return 0;
}
ncclResult_t ncclReduceScatter(const void *s, void *r, size_t n, int dt, int op, ncclComm_t c, void *st) {
    (void)s; (void)r; (void)st;
    stub_log("ncclReduceScatter token=%u member=%d count=%zu dtype=%d op=%d", c->token, c->rank, n, dt, op);
    if (!moving()) return 0;
    pthread_mutex_lock(&mu);
    meet_t *m = meet_of(c->token);
    m->send[c->rank] = s;
    barrier(m, c->nranks);
    memset(r, 0, n * dsize(dt));
    for (int j = 0; j < c->nranks; j++) sum_into(r, (const char *)m->send[j] + c->rank * n * dsize(dt), n, dt);
    barrier(m, c->nranks);
    pthread_mutex_unlock(&mu);
    return 0;
}
ncclResult_t ncclBroadcast(const void *s, void *r, size_t n, int dt, int root, ncclComm_t c, void *st) {
    (void)s; (void)r; (void)st;
    stub_log("ncclBroadcast token=%u member=%d count=%zu dtype=%d root=%d", c->token, c->rank, n, dt, root);
    if (!moving()) return 0;
    pthread_mutex_lock(&mu);
    meet_t *m = meet_of(c->token);
    m->send[c->rank] = s;
    barrier(m, c->nranks);
    if (c->rank != root) memcpy(r, m->send[root], n * dsize(dt));
    barrier(m, c->nranks);
    pthread_mutex_unlock(&mu);
    return 0;
}
ncclResult_t ncclSend(const void *s, size_t n, int dt, int peer, ncclComm_t c, void *st) {
    (void)st;
    stub_log("ncclSend token=%u member=%d peer=%d count=%zu dtype=%d at=%zu", c->token, c->rank, peer, n, dt, (size_t)s);
    if (moving()) pending[npending++] = (pend_t){1, (void *)s, n * dsize(dt), peer, c};
    return 0;
}
ncclResult_t ncclRecv(void *r, size_t n, int dt, int peer, ncclComm_t c, void *st) {
    (void)st;
    stub_log("ncclRecv token=%u member=%d peer=%d count=%zu dtype=%d at=%zu", c->token, c->rank, peer, n, dt, (size_t)r);
    if (moving()) pending[npending++] = (pend_t){0, r, n * dsize(dt), peer, c};
    return 0;
}
ncclResult_t ncclGroupStart(void) { stub_log("ncclGroupStart"); in_group = 1; return 0; }

/* Posts this thread's sends, takes its receives in order, then waits until its sends are taken. */
ncclResult_t ncclGroupEnd(void) {
    stub_log("ncclGroupEnd");
    in_group = 0;
    if (!moving()) return 0;
    pthread_mutex_lock(&mu);
    mail_t *mine[256];
    int nmine = 0;
    for (int i = 0; i < npending; i++) {
        pend_t *p = &pending[i];
        if (!p->send) continue;
        mail_t *m = calloc(1, sizeof *m);
        *m = (mail_t){p->c->token, p->c->rank, p->peer, p->buf, p->bytes, 0, NULL};
        mail_t **t = &mailbox;
        while (*t) t = &(*t)->next;
        *t = m;
        mine[nmine++] = m;
    }
    pthread_cond_broadcast(&cv);
    for (int i = 0; i < npending; i++) {
        pend_t *p = &pending[i];
        if (p->send) continue;
        for (;;) {
            mail_t *m = mailbox;
            while (m && !(m->token == p->c->token && m->from == p->peer && m->to == p->c->rank && !m->taken)) m = m->next;
            if (m) { memcpy(p->buf, m->buf, p->bytes < m->bytes ? p->bytes : m->bytes); m->taken = 1; pthread_cond_broadcast(&cv); break; }
            pthread_cond_wait(&cv, &mu);
        }
    }
    for (int i = 0; i < nmine; i++) while (!mine[i]->taken) pthread_cond_wait(&cv, &mu);
    for (int i = 0; i < nmine; i++) {
        mail_t **t = &mailbox;
        while (*t != mine[i]) t = &(*t)->next;
        *t = mine[i]->next;
        free(mine[i]);
    }
    npending = 0;
    pthread_mutex_unlock(&mu);
    return 0;
}
