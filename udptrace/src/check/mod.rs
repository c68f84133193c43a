//! `udptrace check HOST:PORT`: the answer `nc -vzu` cannot give. A few probe datagrams from one connected
//! socket with `IP_RECVERR` (`probe`), the route and the next hop's neighbour entry (`route`), and, as root,
//! udptrace's own hooks filtered to that socket (`trace`); the facts make one state (`state`). What is checked
//! is `target`'s, the probes and the hooks beside them `run`'s, the answer `report`'s; `run` here goes from
//! one to the next.

pub mod probe;
mod report;
pub mod route;
mod run;
pub mod state;
mod target;

use std::sync::atomic::AtomicBool;

use anyhow::{Context as _, Result};

pub use self::target::{Check, Hex, Payload, Target, parse_hex, parse_target};
use self::{
    probe::{Probe, ProbeError},
    report::{Path, Report},
    run::{Kernel, Outcome, Plan, from_kernel, kernel_side, probe_with_kernel},
    state::{Facts, State},
    target::{payload_bytes, resolve},
};

/// Runs the check, prints its answer, and returns the state (the exit status is the state's).
pub fn run(check: &Check) -> Result<State> {
    let target = resolve(&check.target, check.ipv4_only, check.ipv6_only)?;
    let (payload, dns_id) = payload_bytes(&check.payload)?;
    let mut facts = Facts { target: Some(target), ..Facts::default() };
    let probe = match Probe::connect(target) {
        Ok(probe) => {
            facts.local = Some(probe.local_addr().context("reading the probe socket's address")?);
            Some(probe)
        }
        Err(ProbeError::Local(error)) => {
            facts.local_error = Some(error);
            None
        }
        Err(ProbeError::Io(e)) => return Err(e).context("opening the probe socket"),
    };
    let plan = Plan { count: check.count, timeout: check.timeout, payload };
    let (outcome, kernel) = match (probe, facts.local) {
        (Some(probe), Some(local)) => match kernel_side(check, local, target) {
            Ok(tracing) => {
                let (outcome, seen) = probe_with_kernel(tracing, probe, &plan)?;
                (outcome, seen)
            }
            Err(why) => {
                if check.verbose || !why.not_root {
                    eprintln!("udptrace: the error queue alone: {}", why.text);
                }
                (plan.run(&probe, &|| false, &AtomicBool::new(false))?, Kernel::Without(why.text))
            }
        },
        _ => (Outcome::default(), Kernel::Without("no probe was sent".to_owned())),
    };
    outcome.add_to(&mut facts);
    if let (Kernel::With { events, .. }, Some(local)) = (&kernel, facts.local) {
        from_kernel(events, local, target, &mut facts);
    }
    let (state, why) = state::decide(&facts);
    let report = Report { check, target, facts, outcome, kernel, state, why, dns_id, path: Path::find(target) };
    if check.json {
        println!("{}", report.json());
    } else {
        println!("{}", report.text());
    }
    Ok(state)
}
