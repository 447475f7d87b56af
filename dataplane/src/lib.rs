//! Everything that runs on a pmdswitch worker core, and the safe DPDK layer under it.
//!
//! `dpdk` is the only module with `unsafe`; the others forbid it.

pub mod dpdk;
pub mod fdb;
pub mod flowcache;
pub mod forward;
pub mod packet;
pub mod sample;
pub mod stats;
pub mod worker;
