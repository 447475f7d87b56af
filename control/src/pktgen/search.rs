//! RFC 2544 section 26.1 throughput: the highest offered rate at which a trial loses no frame
//! (and sends what it offered: virtual ports push back instead of dropping),
//! found by binary search between the generator's own limit and zero; and, as CSIT's PDR, the
//! highest rate losing at most a given share. Pure: a trial is a closure, so the search is
//! tested against devices that drop above a known rate.

/// What one trial at an offered rate gave.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrialOutcome {
    /// Rate asked of the generator (frames/s, all ports); None for "as fast as it can".
    pub offered_pps: Option<f64>,
    /// Rate actually sent (frames/s, all ports).
    pub sent_pps: f64,
    /// Frames lost as a share of frames sent (0 to 1).
    pub loss_ratio: f64,
    /// Frames due at the offered rate but never sent (the device pushed back, or the
    /// generator topped out), as a share of those due (0 to 1).
    pub shortfall_ratio: f64,
}

/// The share of due frames a paced trial may leave unsent and still pass (pacing rounding).
pub const SHORTFALL_TOLERANCE: f64 = 0.001;

impl TrialOutcome {
    /// The trial sent what was offered and lost at most `loss` of it.
    pub fn passes(&self, loss: f64) -> bool {
        self.loss_ratio <= loss && self.shortfall_ratio <= SHORTFALL_TOLERANCE
    }
}

/// The search's settings.
#[derive(Debug, Clone, Copy)]
pub struct SearchSettings {
    /// Stop when the bounds are this close, as a share of the upper one (e.g. 0.005).
    pub resolution: f64,
    /// The loss share the second figure (PDR) allows, e.g. 0.005 for 0.5%.
    pub pdr_loss: f64,
    /// Most trials after the first, NDR's and PDR's searches together (repeats included).
    pub max_trials: usize,
    /// Times a failed paced trial is run again before the rate counts as failed (loss
    /// verification, as OPNFV VSPERF's binary search does): one stall of a shared machine
    /// then does not pull the figure down. 0 for RFC 2544's single trial.
    pub retries: usize,
}

/// Where a search ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Frames/s actually sent in the best passing trial (0 when none passed).
    pub pps: f64,
    /// The passing trial was the unpaced one: the generator, not the device, set the figure.
    pub generator_bound: bool,
}

/// Results of [`search`].
#[derive(Debug, Clone, PartialEq)]
pub struct SearchResult {
    /// The generator's rate when unpaced (frames/s): the ceiling of the search.
    pub generator_pps: f64,
    /// Zero-loss throughput (NDR).
    pub ndr: Rate,
    /// Throughput at the allowed loss share (PDR).
    pub pdr: Rate,
    /// Every trial, in order.
    pub trials: Vec<TrialOutcome>,
}

/// Runs the search. `trial(Some(pps))` runs a paced trial, `trial(None)` an unpaced one; it
/// returns None when the run was stopped (a signal), and the search ends with what it has.
pub fn search(
    settings: SearchSettings,
    mut trial: impl FnMut(Option<f64>) -> Option<TrialOutcome>,
) -> SearchResult {
    let mut trials = Vec::new();
    let Some(first) = trial(None) else {
        return SearchResult {
            generator_pps: 0.0,
            ndr: Rate::none(),
            pdr: Rate::none(),
            trials,
        };
    };
    trials.push(first);
    let ceiling = first.sent_pps;
    let mut stopped = false;
    // Trials after the first, both figures' searches together.
    let mut runs = 0;
    let mut bound = |target: f64, trials: &mut Vec<TrialOutcome>, stopped: &mut bool| -> Rate {
        if first.passes(target) {
            return Rate {
                pps: first.sent_pps,
                generator_bound: true,
            };
        }
        // Known bounds from trials already run (the NDR search's trials serve the PDR's): the
        // highest rate with a passing attempt, and the lowest rate above it whose every
        // attempt failed.
        let mut lo: Option<TrialOutcome> = None;
        for t in trials.iter().filter(|t| t.offered_pps.is_some()) {
            let r = t.offered_pps.unwrap_or(0.0);
            if t.passes(target) && lo.is_none_or(|l| l.offered_pps.unwrap_or(0.0) < r) {
                lo = Some(*t);
            }
        }
        let lo_rate = lo.and_then(|t| t.offered_pps).unwrap_or(0.0);
        let mut hi = ceiling;
        for t in trials.iter() {
            let Some(r) = t.offered_pps else { continue };
            let all_failed = trials
                .iter()
                .filter(|u| u.offered_pps == Some(r))
                .all(|u| !u.passes(target));
            if r > lo_rate && r < hi && all_failed {
                hi = r;
            }
        }
        while !*stopped && runs < settings.max_trials {
            let lo_rate = lo.and_then(|t| t.offered_pps).unwrap_or(0.0);
            if hi - lo_rate <= settings.resolution * hi {
                break;
            }
            let mid = (lo_rate + hi) / 2.0;
            let mut passed = None;
            for _ in 0..=settings.retries {
                if runs >= settings.max_trials {
                    break;
                }
                let Some(t) = trial(Some(mid)) else {
                    *stopped = true;
                    break;
                };
                runs += 1;
                trials.push(t);
                if t.passes(target) {
                    passed = Some(t);
                    break;
                }
            }
            if *stopped {
                break;
            }
            match passed {
                Some(t) => lo = Some(t),
                // Out of budget before any attempt passed: the rate is not known to fail.
                None if runs >= settings.max_trials => break,
                None => hi = mid,
            }
        }
        lo.map_or(Rate::none(), |t| Rate {
            pps: t.sent_pps,
            generator_bound: false,
        })
    };
    let ndr = bound(0.0, &mut trials, &mut stopped);
    let pdr = bound(settings.pdr_loss, &mut trials, &mut stopped);
    SearchResult {
        generator_pps: ceiling,
        ndr,
        pdr,
        trials,
    }
}

impl Rate {
    fn none() -> Rate {
        Rate {
            pps: 0.0,
            generator_bound: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device that forwards up to `capacity` frames/s and drops the excess; the generator
    /// tops out at `generator`.
    fn device(capacity: f64, generator: f64) -> impl FnMut(Option<f64>) -> Option<TrialOutcome> {
        move |offered| {
            let sent = offered.unwrap_or(generator).min(generator);
            let loss = if sent > capacity {
                (sent - capacity) / sent
            } else {
                0.0
            };
            Some(TrialOutcome {
                offered_pps: offered,
                sent_pps: sent,
                loss_ratio: loss,
                shortfall_ratio: 0.0,
            })
        }
    }

    fn settings() -> SearchSettings {
        SearchSettings {
            resolution: 0.005,
            pdr_loss: 0.005,
            max_trials: 30,
            retries: 0,
        }
    }

    #[test]
    fn converges_on_the_rate_above_which_the_device_drops() {
        let r = search(settings(), device(7.3e6, 20e6));
        assert!(!r.ndr.generator_bound);
        assert!(
            r.ndr.pps <= 7.3e6 && r.ndr.pps >= 7.3e6 * 0.99,
            "{:?}",
            r.ndr
        );
        // 0.5% loss allowed: up to 7.3e6 / 0.995.
        assert!(
            r.pdr.pps > 7.3e6 && r.pdr.pps <= 7.3e6 / 0.995,
            "{:?}",
            r.pdr
        );
        assert!(r.trials.len() < 25, "{} trials", r.trials.len());
    }

    #[test]
    fn a_device_faster_than_the_generator_is_reported_as_generator_bound() {
        let r = search(settings(), device(30e6, 20e6));
        assert_eq!(r.trials.len(), 1);
        assert_eq!(
            r.ndr,
            Rate {
                pps: 20e6,
                generator_bound: true
            }
        );
    }

    #[test]
    fn a_device_that_loses_at_any_rate_has_no_throughput() {
        let mut lossy = |o: Option<f64>| {
            Some(TrialOutcome {
                offered_pps: o,
                sent_pps: o.unwrap_or(1e6),
                loss_ratio: 0.01,
                shortfall_ratio: 0.0,
            })
        };
        let r = search(settings(), &mut lossy);
        assert_eq!(r.ndr.pps, 0.0);
        assert_eq!(r.pdr.pps, 0.0);
    }

    #[test]
    fn a_device_that_pushes_back_instead_of_dropping_fails_the_rates_it_cannot_take() {
        // Virtual ports refuse what they cannot take: nothing is lost, but less is sent.
        let r = search(settings(), |o: Option<f64>| {
            let sent = o.unwrap_or(4e6).min(4e6);
            Some(TrialOutcome {
                offered_pps: o,
                sent_pps: sent,
                loss_ratio: 0.0,
                shortfall_ratio: o.map_or(0.0, |o| (o - sent) / o),
            })
        });
        // The unpaced trial sends 4 Mpps without loss: that is the figure, set by the device.
        assert!(r.ndr.generator_bound);
        assert_eq!(r.ndr.pps, 4e6);
        let paced = TrialOutcome {
            offered_pps: Some(5e6),
            sent_pps: 4e6,
            loss_ratio: 0.0,
            shortfall_ratio: 0.2,
        };
        assert!(!paced.passes(0.0));
    }

    #[test]
    fn a_failed_trial_is_run_again_before_its_rate_counts_as_failed() {
        // A device that loses frames in every third trial whatever the rate (a stall).
        let mut n = 0;
        let mut dev = device(5e6, 20e6);
        let mut flaky = |o: Option<f64>| {
            n += 1;
            let mut t = dev(o)?;
            if n % 3 == 0 {
                // A stall loses more than PDR allows, too.
                t.loss_ratio = t.loss_ratio.max(0.01);
            }
            Some(t)
        };
        let r = search(
            SearchSettings {
                retries: 1,
                ..settings()
            },
            &mut flaky,
        );
        assert!(r.ndr.pps >= 5e6 * 0.99 && r.ndr.pps <= 5e6, "{:?}", r.ndr);
        // A rate that failed once and passed when repeated does not bound the PDR search.
        assert!(r.pdr.pps > 5e6 && r.pdr.pps <= 5e6 / 0.995, "{:?}", r.pdr);
        assert!(r.trials.len() <= 31, "one budget for both searches");
        // Without the repeat the stalls pull it down.
        let mut n = 0;
        let mut dev = device(5e6, 20e6);
        let r = search(settings(), |o: Option<f64>| {
            n += 1;
            let mut t = dev(o)?;
            if n % 3 == 0 {
                t.loss_ratio = t.loss_ratio.max(1e-6);
            }
            Some(t)
        });
        assert!(r.ndr.pps < 5e6 * 0.99, "{:?}", r.ndr);
    }

    #[test]
    fn a_stop_ends_the_search_with_what_it_has() {
        let mut dev = device(5e6, 20e6);
        let mut n = 0;
        let r = search(settings(), |o| {
            n += 1;
            (n <= 4).then(|| dev(o)).flatten()
        });
        assert_eq!(r.trials.len(), 4);
        assert!(r.ndr.pps <= 5e6);
    }
}
