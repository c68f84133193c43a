//! The values of a label that come from outside (addresses, DNS names): each counter gives at most
//! [`MAX_VALUES`] of them a series of their own, and the rest count as `other`.
//!
//! Anyone who can reach the host chooses these values: a spoofed ICMP error quotes any tuple, a DNS query
//! to a closed port any name. So a value takes a slot only once it has been seen in two different seconds
//! (a spoofed value is seen once), and a slot whose series were not incremented for [`IDLE_SECS`] is freed
//! with its series, so that values seen early cannot hold every slot for life.

use std::collections::{HashMap, HashSet};

use super::Labels;

/// The values one counter labels at most.
pub const MAX_VALUES: usize = 1000;
/// Values seen once, waiting for a second sighting in another second, at most. When full, those not seen
/// in the current second are forgotten; while it is still full (more new values than this in one second,
/// a flood of spoofed ones), a new value is not remembered and stays `other`.
const MAX_CANDIDATES: usize = 4 * MAX_VALUES;
/// A slot not incremented for this long is freed, with its series.
pub const IDLE_SECS: u64 = 600;

/// One counter's slots. Time is in whole seconds from any fixed start.
#[derive(Default)]
pub struct Slots {
    held: HashMap<String, Held>,
    /// Values seen once, with the second they were seen in.
    candidates: HashMap<String, u64>,
    /// The second of the last sweep for idle slots.
    swept: u64,
    /// Values from the node's own files (pods), which no remote sender chooses: a slot at first sight.
    trusted: bool,
}

struct Held {
    /// The last second it was incremented.
    last: u64,
    /// The label sets of its series, removed with it.
    series: HashSet<Labels>,
}

impl Slots {
    /// Slots for values no remote sender chooses (pods, named by the node's container runtime): each takes a
    /// slot when first seen, still at most [`MAX_VALUES`], still freed when idle.
    pub fn trusted() -> Self {
        Self { trusted: true, ..Self::default() }
    }

    /// Whether `value` has a slot at `now` (taking one if it qualifies). A value without one counts as
    /// `other`.
    pub fn admit(&mut self, value: &str, now: u64) -> bool {
        if let Some(held) = self.held.get_mut(value) {
            held.last = now;
            return true;
        }
        if self.trusted && self.held.len() < MAX_VALUES {
            self.held.insert(value.to_owned(), Held { last: now, series: HashSet::new() });
            return true;
        }
        match self.candidates.get(value) {
            Some(&seen) if seen != now && self.held.len() < MAX_VALUES => {
                self.candidates.remove(value);
                self.held.insert(value.to_owned(), Held { last: now, series: HashSet::new() });
                true
            }
            Some(_) => false,
            None => {
                if self.candidates.len() >= MAX_CANDIDATES {
                    self.candidates.retain(|_, seen| *seen == now);
                }
                if self.candidates.len() < MAX_CANDIDATES {
                    self.candidates.insert(value.to_owned(), now);
                }
                false
            }
        }
    }

    /// Notes that `labels`, a series of the admitted `value`, exists: it goes when the value's slot does.
    pub fn record(&mut self, value: &str, labels: &Labels) {
        if let Some(held) = self.held.get_mut(value)
            && !held.series.contains(labels)
        {
            held.series.insert(labels.clone());
        }
    }

    /// Frees the slots idle for [`IDLE_SECS`] at `now` (looked for at most once a second), and forgets the
    /// candidates as old: the series to remove.
    pub fn sweep(&mut self, now: u64) -> Vec<Labels> {
        if now == self.swept {
            return Vec::new();
        }
        self.swept = now;
        let idle = |last: u64| now.saturating_sub(last) >= IDLE_SECS;
        self.candidates.retain(|_, seen| !idle(*seen));
        let gone: Vec<String> = self.held.iter().filter(|(_, h)| idle(h.last)).map(|(v, _)| v.clone()).collect();
        gone.into_iter().filter_map(|value| self.held.remove(&value)).flat_map(|held| held.series).collect()
    }

    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held.len()
    }

    #[cfg(test)]
    pub fn candidates(&self) -> usize {
        self.candidates.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_seen_in_one_second_only_takes_no_slot() {
        let mut slots = Slots::default();
        // Seen many times, all in second 5: a spoofer's burst.
        for _ in 0..10 {
            assert!(!slots.admit("10.0.0.9:53", 5));
        }
        assert_eq!(slots.held(), 0);
        // Seen again in another second: its own slot from then on.
        assert!(slots.admit("10.0.0.9:53", 6));
        assert!(slots.admit("10.0.0.9:53", 6));
        assert_eq!((slots.held(), slots.candidates()), (1, 0));
    }

    #[test]
    fn spoofed_values_fill_neither_the_slots_nor_the_memory() {
        let mut slots = Slots::default();
        // 100,000 values, each seen once, over 100 seconds.
        for n in 0..100_000u64 {
            assert!(!slots.admit(&format!("spoofed-{n}"), n / 1000));
        }
        assert_eq!(slots.held(), 0);
        assert!(slots.candidates() <= MAX_CANDIDATES, "{}", slots.candidates());
        // A value seen in two seconds still gets a slot.
        assert!(!slots.admit("real", 200));
        assert!(slots.admit("real", 201));
    }

    #[test]
    fn slots_are_at_most_so_many() {
        let mut slots = Slots::default();
        for n in 0..MAX_VALUES + 10 {
            slots.admit(&n.to_string(), 1);
        }
        let admitted = (0..MAX_VALUES + 10).filter(|n| slots.admit(&n.to_string(), 2)).count();
        assert_eq!(admitted, MAX_VALUES);
        assert_eq!(slots.held(), MAX_VALUES);
    }

    #[test]
    fn an_idle_slot_is_freed_with_its_series_and_taken_by_another() {
        let mut slots = Slots::default();
        for n in 0..MAX_VALUES {
            slots.admit(&n.to_string(), 1);
            slots.admit(&n.to_string(), 2);
        }
        let labels: Labels = vec![("remote", "0".to_owned())];
        slots.record("0", &labels);
        // Every value but "0" keeps being incremented; "0" goes idle.
        for now in [300, 600] {
            for n in 1..MAX_VALUES {
                assert!(slots.admit(&n.to_string(), now));
            }
        }
        assert!(slots.sweep(601).is_empty(), "idle for 599 seconds: kept");
        assert!(!slots.admit("late", 601), "the slots are full");
        assert_eq!(slots.sweep(602), vec![labels], "idle for 600 seconds: freed, with its series");
        assert_eq!(slots.sweep(602), Vec::<Labels>::new(), "a sweep a second at most");
        assert!(slots.admit("late", 603), "the freed slot goes to a value seen in two seconds");
        assert!(!slots.admit("0", 603), "the freed value starts over");
    }
}
