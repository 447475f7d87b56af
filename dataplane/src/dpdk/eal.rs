//! The Environment Abstraction Layer: initialised once per process, it owns the lcores that
//! workers run on and is cleaned up as the very last DPDK call.

use std::ffi::{c_int, c_void, CString};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

use dpdk_sys as sys;

use super::DpdkError;

/// An EAL logical core id (`rte_lcore_id()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LcoreId(pub u32);

impl fmt::Display for LcoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

static EAL_INITIALISED: AtomicBool = AtomicBool::new(false);

/// The initialised EAL. Dropping it calls `rte_eal_cleanup`, so it must outlive every port,
/// mempool and launched worker (the switch drops it last).
pub struct Eal {
    main: LcoreId,
    workers: Vec<LcoreId>,
    // Launch, wait and cleanup belong to the main lcore's thread: neither Send nor Sync.
    _main_thread_only: std::marker::PhantomData<*const ()>,
}

/// The closure a worker lcore runs, boxed so it crosses the C launch call as one thin pointer.
type LaunchFn = Box<dyn FnOnce() -> i32 + Send + 'static>;

extern "C" fn launch_trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the pointer Box::into_raw produced in `Eal::launch` for exactly this call;
    // rte_eal_remote_launch hands it to this function once, so ownership is taken back once.
    let f: Box<LaunchFn> = unsafe { Box::from_raw(arg.cast::<LaunchFn>()) };
    // A panic must not unwind into C: report it as a failed worker instead (builds with
    // panic = "abort", the release profile, abort the process before this is reached).
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(-1)
}

impl Eal {
    /// Initialises the EAL with `args` (as after `--` on the command line; argv[0] is added).
    /// Succeeds once per process: DPDK cannot be initialised twice.
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Eal, DpdkError> {
        if EAL_INITIALISED.swap(true, Ordering::SeqCst) {
            return Err(DpdkError {
                op: "rte_eal_init".into(),
                errno: super::EALREADY,
                message: "the EAL is already initialised in this process".into(),
            });
        }
        let mut owned: Vec<CString> = Vec::with_capacity(args.len() + 1);
        owned.push(CString::new("pmdswitch").expect("no NUL in a literal"));
        for a in args {
            let a = a.as_ref();
            owned.push(CString::new(a).map_err(|_| DpdkError {
                op: "rte_eal_init".into(),
                errno: super::EINVAL,
                message: format!("EAL argument {a:?} contains a NUL byte"),
            })?);
        }
        // rte_eal_init may keep pointers into argv and reorder it: both the strings and the
        // array live for the rest of the process.
        let strings: &'static mut Vec<CString> = Box::leak(Box::new(owned));
        let argv: &'static mut Vec<*mut std::ffi::c_char> = Box::leak(Box::new(
            strings.iter_mut().map(|s| s.as_ptr().cast_mut()).collect(),
        ));
        let argc = c_int::try_from(argv.len()).expect("argument count fits in int");
        // SAFETY: argv holds argc valid NUL-terminated strings that are never freed; this is the
        // only rte_eal_init call in the process (guarded by EAL_INITIALISED above).
        let ret = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if ret < 0 {
            return Err(DpdkError::from_errno("rte_eal_init"));
        }
        // SAFETY: the EAL is initialised; these read its lcore configuration.
        let main = LcoreId(unsafe { sys::rte_get_main_lcore() });
        let mut workers = Vec::new();
        let mut id: u32 = u32::MAX;
        loop {
            // SAFETY: rte_get_next_lcore walks the enabled lcores; u32::MAX (-1) starts the walk,
            // skip_main=1 leaves out the main lcore, wrap=0 ends it with RTE_MAX_LCORE.
            id = unsafe { sys::rte_get_next_lcore(id, 1, 0) };
            if id >= sys::RTE_MAX_LCORE {
                break;
            }
            workers.push(LcoreId(id));
        }
        Ok(Eal {
            main,
            workers,
            _main_thread_only: std::marker::PhantomData,
        })
    }

    /// The main lcore: the thread that called `init`, which runs the control loop.
    pub fn main_lcore(&self) -> LcoreId {
        self.main
    }

    /// The worker lcores, in order (every lcore of `-l` but the first).
    pub fn worker_lcores(&self) -> &[LcoreId] {
        &self.workers
    }

    /// Runs `f` on worker lcore `lcore`. The lcore must be idle (never launched, or waited for).
    pub fn launch<F>(&self, lcore: LcoreId, f: F) -> Result<(), DpdkError>
    where
        F: FnOnce() -> i32 + Send + 'static,
    {
        let boxed: Box<LaunchFn> = Box::new(Box::new(f));
        let arg = Box::into_raw(boxed).cast::<c_void>();
        // SAFETY: launch_trampoline has the lcore_function_t signature and takes ownership of
        // `arg` exactly once; if the launch fails the pointer is reclaimed below instead.
        let ret = unsafe { sys::rte_eal_remote_launch(Some(launch_trampoline), arg, lcore.0) };
        if ret != 0 {
            // SAFETY: the launch failed, so the trampoline never ran and `arg` is still ours.
            drop(unsafe { Box::from_raw(arg.cast::<LaunchFn>()) });
            return Err(DpdkError::from_ret(
                format!("rte_eal_remote_launch(lcore {lcore})"),
                ret,
            ));
        }
        Ok(())
    }

    /// Waits for the function running on `lcore` to return, and gives its return value.
    pub fn wait(&self, lcore: LcoreId) -> i32 {
        // SAFETY: waits on an lcore id that the EAL enumerated; returns at once if it is idle.
        unsafe { sys::rte_eal_wait_lcore(lcore.0) }
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        for &l in &self.workers {
            self.wait(l);
        }
        // SAFETY: the last DPDK call of the process: every worker has returned (waited above) and,
        // by the ownership rules of this module, every port and mempool was dropped before the Eal.
        unsafe {
            sys::rte_eal_cleanup();
        }
    }
}

/// The time-stamp counter (`rte_rdtsc`): cycles since an arbitrary start, per core.
#[inline(always)]
pub fn tsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: rdtsc reads the time-stamp counter and has no memory effects; it is what
    // rte_rdtsc does, inlined here instead of a call through the shim.
    unsafe {
        std::arch::x86_64::_rdtsc()
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: reads the cycle counter through DPDK's shim; no memory effects.
    unsafe {
        sys::rte_rdtsc()
    }
}

/// Cycles per second of [`tsc`], as the EAL measured it.
pub fn tsc_hz() -> u64 {
    // SAFETY: reads a value the EAL computed at init; returns 0 before init.
    unsafe { sys::rte_get_tsc_hz() }
}
