/* The logging stubs' shared part: one line per call to $FINETP_STUB_LOG, prefixed with the
 * calling thread's device (set by aclrtSetDevice in the ACL stub, read here through
 * finetp_stub_device(), which that stub exports). Lines are written whole with one write(2)
 * on an O_APPEND descriptor, so threads never interleave within a line. */
#ifndef FINETP_STUB_LOG_H
#define FINETP_STUB_LOG_H

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int finetp_stub_device(void);

static void stub_log(const char *fmt, ...) {
    static int fd = -2;
    if (fd == -2) {
        const char *path = getenv("FINETP_STUB_LOG");
        fd = path ? open(path, O_WRONLY | O_CREAT | O_APPEND, 0644) : -1;
    }
    if (fd < 0) return;
    char line[4096];
    int n = snprintf(line, sizeof line, "dev=%d ", finetp_stub_device());
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
    line[n++] = '\n';
    if (write(fd, line, n) < 0) { /* nothing to report to */ }
}

#endif
