//! Port events from drivers (`rte_eth_dev_callback_register`): a link that went up or down,
//! a queue the peer enabled or disabled. DPDK calls back on its interrupt thread (or, for
//! vhost-user, its vhost thread), where nothing may wait on the switch: the callback only
//! posts the event to a channel that the control thread drains.

use std::ffi::{c_int, c_void};

use dpdk_sys as sys;

use super::{DpdkError, PortId};

/// What a driver reported about a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortEvent {
    /// The link went up or down (`RTE_ETH_EVENT_INTR_LSC`): read it with `Port::link`.
    Link(PortId),
    /// A queue was enabled or disabled by the peer (`RTE_ETH_EVENT_QUEUE_STATE`).
    QueueState(PortId),
}

/// Where a port's events are posted.
pub type EventSender = crossbeam_channel::Sender<PortEvent>;

/// The events a port is watched for.
const EVENTS: [sys::rte_eth_event_type; 2] =
    [sys::RTE_ETH_EVENT_INTR_LSC, sys::RTE_ETH_EVENT_QUEUE_STATE];

/// A port's registration: the callback's argument, kept at a fixed address until every
/// callback is unregistered.
pub(crate) struct Watch {
    port: PortId,
    tx: EventSender,
}

/// Called by DPDK on its interrupt or vhost thread for a registered port.
unsafe extern "C" fn on_event(
    port_id: u16,
    event: sys::rte_eth_event_type,
    cb_arg: *mut c_void,
    _ret_param: *mut c_void,
) -> c_int {
    // SAFETY: cb_arg is the address of the boxed Watch registered with this callback; the box
    // lives until `unwatch` has unregistered it, and DPDK does not call back after that.
    let watch = unsafe { &*cb_arg.cast::<Watch>() };
    let id = PortId(port_id);
    let ev = match event {
        sys::RTE_ETH_EVENT_INTR_LSC => PortEvent::Link(id),
        sys::RTE_ETH_EVENT_QUEUE_STATE => PortEvent::QueueState(id),
        _ => return 0,
    };
    // An unbounded channel never blocks; a control thread gone away is nothing to tell.
    let _ = watch.tx.send(ev);
    0
}

/// Registers `port` for link and queue-state events, posted to `tx`.
pub(crate) fn watch(port: PortId, tx: EventSender) -> Result<Box<Watch>, DpdkError> {
    let w = Box::new(Watch { port, tx });
    let arg = (&*w as *const Watch).cast_mut().cast::<c_void>();
    for (i, &event) in EVENTS.iter().enumerate() {
        // SAFETY: a valid port id; the callback matches DPDK's signature and `arg` points to
        // the boxed Watch returned below, which the caller keeps until `unwatch`.
        let ret = unsafe { sys::rte_eth_dev_callback_register(port.0, event, Some(on_event), arg) };
        if ret != 0 {
            unregister(port, &EVENTS[..i], arg);
            return Err(DpdkError::from_ret(
                format!("rte_eth_dev_callback_register(port {port})"),
                ret,
            ));
        }
    }
    Ok(w)
}

/// Unregisters what `watch` registered; the Watch may be dropped afterwards.
pub(crate) fn unwatch(w: Box<Watch>) {
    let arg = (&*w as *const Watch).cast_mut().cast::<c_void>();
    unregister(w.port, &EVENTS, arg);
    drop(w);
}

fn unregister(port: PortId, events: &[sys::rte_eth_event_type], arg: *mut c_void) {
    for &event in events {
        loop {
            // SAFETY: the same (port, event, callback, argument) as registered; DPDK answers
            // -EAGAIN while the callback runs, and it is tried again until it is out.
            let ret =
                unsafe { sys::rte_eth_dev_callback_unregister(port.0, event, Some(on_event), arg) };
            if ret != -super::EAGAIN {
                break;
            }
            std::thread::yield_now();
        }
    }
}
