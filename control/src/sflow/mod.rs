//! sFlow v5 export (sflow.org `sflow_version_5.txt`): datagram encoding in [`encode`].
pub mod agent;
pub mod encode;
