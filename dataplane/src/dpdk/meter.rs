//! Rate meters on DPDK's `rte_meter` (single-rate three-colour marker, RFC 2697), used colour
//! blind with an excess burst of zero: a packet conforms (green) or is over the rate (red).

use dpdk_sys as sys;

use super::DpdkError;

/// One srTCM meter and its profile: the rate in units per second and the burst in units, where
/// a unit is whatever the caller passes as a packet's length (bytes for policing, 1 per packet
/// for packet-rate limits).
pub struct RateMeter {
    profile: sys::rte_meter_srtcm_profile,
    state: sys::rte_meter_srtcm,
}

// SAFETY: the meter is plain data (no pointers); rte_meter keeps no hidden state.
unsafe impl Send for RateMeter {}

impl RateMeter {
    /// A meter of `rate` units per second with a bucket of `burst` units (both > 0). Needs the
    /// EAL (the TSC frequency) to be initialised.
    pub fn new(rate: u64, burst: u64) -> Result<RateMeter, DpdkError> {
        let mut params = sys::rte_meter_srtcm_params {
            cir: rate,
            cbs: burst,
            ebs: 0,
        };
        let mut profile = sys::rte_meter_srtcm_profile::default();
        // SAFETY: both pointers are to live locals; the call only writes the profile.
        let ret = unsafe { sys::rte_meter_srtcm_profile_config(&mut profile, &mut params) };
        if ret != 0 {
            return Err(DpdkError::from_ret(
                format!("rte_meter_srtcm_profile_config(rate {rate}, burst {burst})"),
                ret,
            ));
        }
        let mut state = sys::rte_meter_srtcm::default();
        // SAFETY: as above; the meter starts with full buckets at the current TSC.
        let ret = unsafe { sys::rte_meter_srtcm_config(&mut state, &mut profile) };
        if ret != 0 {
            return Err(DpdkError::from_ret("rte_meter_srtcm_config", ret));
        }
        Ok(RateMeter { profile, state })
    }

    /// Takes `units` from the bucket at TSC time `now`: true when they conform to the rate.
    #[inline(always)]
    pub fn conform(&mut self, now: u64, units: u32) -> bool {
        // SAFETY: both structures are owned by this meter and were configured in `new`.
        let colour = unsafe {
            sys::rte_meter_srtcm_color_blind_check(&mut self.state, &mut self.profile, now, units)
        };
        colour == sys::RTE_COLOR_GREEN
    }
}
