/* What bindgen reads: CANN's own ACL header where CANN is installed (FINETP_WITH_CANN, set
 * by build.rs), finetp's declarations otherwise; aclnn is always finetp's (see finetp_aclnn.h). */
#ifdef FINETP_WITH_CANN
#include <acl/acl.h>
#else
#include "finetp_acl.h"
#endif
#include "finetp_aclnn.h"
