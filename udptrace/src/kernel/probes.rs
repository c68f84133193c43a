//! `udptrace probes`: per logical hook and mode, whether it attaches here and why not.

use anyhow::Result;

use super::{
    hooks::HOOKS,
    loader::{self, HookOutcome, KernelFacts},
};
use crate::domain::AttachMode;

pub fn print(facts: &KernelFacts, verbose: bool) -> Result<()> {
    println!("kernel {}", facts.release);
    // One fresh object per mode, so each mode is tried on its own; dropping it detaches everything.
    let mut per_mode: Vec<(AttachMode, Vec<HookOutcome>)> = Vec::new();
    for mode in AttachMode::LADDER {
        let mut ebpf = loader::load_object(facts, &udptrace_common::Config::default(), false, None, None)?;
        per_mode.push((mode, loader::attach_all(&mut ebpf, facts, &[mode])));
    }

    let mut auto = Vec::new();
    for (index, hook) in HOOKS.iter().enumerate() {
        println!("\n{}: {}", hook.name, hook.observes);
        let mut chosen = None;
        // A hook of one mode whatever is asked (a cgroup program) is tried with each, and said once.
        let shown = if hook.modes(&AttachMode::LADDER).len() == 1 { &per_mode[..1] } else { &per_mode[..] };
        for (mode, outcomes) in shown {
            let mode = &hook.modes(&[*mode])[0];
            let outcome = &outcomes[index];
            let result = match (outcome.attached, hook.variant(*mode)) {
                (Some(_), Some(variant)) => {
                    chosen.get_or_insert(*mode);
                    let mut result = format!("attached: {} ({})", outcome.targets.join(", "), variant.limits);
                    for fallback in &outcome.fallbacks {
                        result.push_str(&format!("; {fallback}"));
                    }
                    result
                }
                _ => format!("no: {}", why_not(outcome)),
            };
            println!("  {:<11} {}", mode.as_str(), result);
            if verbose {
                print_verifier_logs(outcome);
            }
        }
        auto.push(format!("{}={}", hook.name, chosen.map_or("none", AttachMode::as_str)));
    }
    println!("\n--probe auto would use: {}", auto.join(", "));
    Ok(())
}

/// The last failure's reason, which is the one that matters for a forced mode.
pub fn why_not(outcome: &HookOutcome) -> String {
    outcome.failures.last().map_or_else(|| "not tried".to_owned(), |f| f.reason.clone())
}

/// Each failed mode and, when the verifier spoke, its log (for `-v`).
pub fn print_failures(outcome: &HookOutcome) {
    for failure in &outcome.failures {
        eprintln!("udptrace: {} ({}): {}", outcome.hook.name, failure.mode, failure.reason);
    }
    print_verifier_logs(outcome);
}

fn print_verifier_logs(outcome: &HookOutcome) {
    for failure in &outcome.failures {
        if let Some(log) = &failure.verifier_log {
            eprintln!("udptrace: {} ({}): verifier log:\n{log}", outcome.hook.name, failure.mode);
        }
    }
}
