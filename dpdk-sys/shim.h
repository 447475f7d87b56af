/* Hand-written shim for what bindgen cannot reach: macros and thread-local state. */
#ifndef PMDSWITCH_SHIM_H
#define PMDSWITCH_SHIM_H
#include <stdint.h>

/* rte_errno is a per-lcore (thread-local) macro, not a symbol. */
int pmdswitch_rte_errno(void);
/* rte_version() string of the DPDK the process loaded. */
const char *pmdswitch_rte_version(void);

#endif
