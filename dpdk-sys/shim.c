#include <rte_errno.h>
#include <rte_prefetch.h>
#include <rte_version.h>
#include "shim.h"

int pmdswitch_rte_errno(void) { return rte_errno; }
const char *pmdswitch_rte_version(void) { return rte_version(); }
void pmdswitch_prefetch0(const volatile void *p) { rte_prefetch0(p); }
