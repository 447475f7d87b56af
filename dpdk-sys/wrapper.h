/* The DPDK headers pmdswitch binds to. bindgen reads this file; its static inline
 * functions are wrapped into extern.c by bindgen and compiled by build.rs. */
#include <rte_common.h>
#include <rte_errno.h>
#include <rte_eal.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_dev.h>
#include <rte_devargs.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_ring.h>
#include <rte_meter.h>
#include <rte_version.h>
/* vhost-user ports: queue-state events, the guest's negotiated features. */
#include <rte_vhost.h>
#include <rte_eth_vhost.h>
#include "shim.h"
