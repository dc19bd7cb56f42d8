/* What every backend's logging stub libraries (each backend's tests/stubs/) share: one line
 * per call to $FINETP_STUB_LOG, written whole with one write(2) on an O_APPEND descriptor, so
 * threads never interleave within a line. A stub that prefixes its lines (the calling rank or
 * device) defines STUB_PREFIX(buf, n), returning the characters it wrote, before including it. */
#ifndef FINETP_STUB_LOG_H
#define FINETP_STUB_LOG_H

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#ifndef STUB_PREFIX
#define STUB_PREFIX(buf, n) 0
#endif

static void stub_log(const char *fmt, ...) {
    static int fd = -2;
    if (fd == -2) {
        const char *path = getenv("FINETP_STUB_LOG");
        fd = path ? open(path, O_WRONLY | O_CREAT | O_APPEND, 0644) : -1;
    }
    if (fd < 0) return;
    char line[1024];
    int n = STUB_PREFIX(line, sizeof line);
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
    line[n++] = '\n';
    if (write(fd, line, n) < 0) { /* nothing to report to */ }
}

#endif
