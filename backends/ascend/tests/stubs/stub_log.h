/* The Ascend logging stubs' lines are prefixed with the calling thread's device (set by
 * aclrtSetDevice in the ACL stub, read through finetp_stub_device(), which that stub exports);
 * the logging itself is the shared crates/finetp-testkit/stubs/stub_log.h. */
#ifndef FINETP_ASCEND_STUB_LOG_H
#define FINETP_ASCEND_STUB_LOG_H

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int finetp_stub_device(void);

#define STUB_PREFIX(buf, n) snprintf(buf, n, "dev=%d ", finetp_stub_device())
#include "../../../../crates/finetp-testkit/stubs/stub_log.h"

#endif
