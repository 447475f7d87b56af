#include <rte_errno.h>
#include <rte_version.h>
#include "shim.h"

int pmdswitch_rte_errno(void) { return rte_errno; }
const char *pmdswitch_rte_version(void) { return rte_version(); }
