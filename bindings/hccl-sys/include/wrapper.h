/* What bindgen reads: CANN's own HCCL header where CANN is installed (FINETP_WITH_CANN, set by
 * build.rs; it parses only as C++), finetp's declarations otherwise. */
#ifdef FINETP_WITH_CANN
#include <hccl/hccl.h>
#else
#include "finetp_hccl.h"
#endif
