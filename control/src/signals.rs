//! SIGINT/SIGTERM (stop) and SIGHUP (reload) as flags the control thread polls, with the
//! signals blocked while the EAL creates its threads so that only this thread takes them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Signals that stop the process (SIGINT, SIGTERM) or reload its configuration (SIGHUP),
/// observed by its control loop.
pub struct StopSignals {
    flag: Arc<AtomicBool>,
    hup: Arc<AtomicBool>,
}

impl StopSignals {
    /// Blocks the signals in this thread, so that the threads the EAL creates inherit the
    /// mask and never take them, and installs handlers that set flags.
    pub fn install() -> Result<StopSignals, std::io::Error> {
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(sig, Arc::clone(&flag))?;
        }
        let hup = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))?;
        Self::mask(nix::sys::signal::SigmaskHow::SIG_BLOCK)?;
        Ok(StopSignals { flag, hup })
    }

    /// True once per SIGHUP.
    pub fn reload_requested(&self) -> bool {
        self.hup.swap(false, Ordering::Relaxed)
    }

    /// After the EAL has made its threads: let the control thread take the signals again.
    pub fn unblock_here(&self) -> Result<(), std::io::Error> {
        Self::mask(nix::sys::signal::SigmaskHow::SIG_UNBLOCK)
    }

    fn mask(how: nix::sys::signal::SigmaskHow) -> Result<(), std::io::Error> {
        use nix::sys::signal::{SigSet, Signal};
        let mut set = SigSet::empty();
        set.add(Signal::SIGINT);
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGHUP);
        nix::sys::signal::pthread_sigmask(how, Some(&set), None).map_err(std::io::Error::from)
    }

    /// True once SIGINT or SIGTERM arrived.
    pub fn raised(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// The stop flag itself, for a loop that polls it without this handle.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.flag)
    }
}
