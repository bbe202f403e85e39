//! `sim`: runs the federation simulator over a range of seeds (a sweep) or replays one seed.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use sim::{Outcome, Params, Totals, explain, run_seed};

/// Deterministic simulation of a federation under faults; every run checks the consistency
/// promises. `--seed S` replays one run exactly.
#[derive(Debug, Parser)]
#[command(name = "sim")]
struct Args {
    /// Run this many seeds (a sweep), from `--start`.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// The first seed of a sweep.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// Run only this seed and say what it did (replay).
    #[arg(long)]
    seed: Option<u64>,
    /// With `--seed`: print the whole trace.
    #[arg(long)]
    trace: bool,
    /// Seeds run side by side (each on its own thread, each deterministic).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    /// Length of the fault phase in simulated seconds.
    #[arg(long, default_value_t = Params::default().fault_secs)]
    fault_secs: u64,
    /// The most client writes per run (at least a quarter as many are made).
    #[arg(long, default_value_t = Params::default().writes.1)]
    writes: u64,
    /// Where the sites' store files go (default: /dev/shm when it exists, else the temporary
    /// directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

fn data_root(args: &Args) -> PathBuf {
    if let Some(dir) = &args.data_dir {
        return dir.clone();
    }
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() { shm } else { std::env::temp_dir() }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let params =
        Params { fault_secs: args.fault_secs, writes: (args.writes / 4, args.writes), ..Params::default() };
    let root = data_root(&args);
    if let Some(seed) = args.seed {
        let started = Instant::now();
        let outcome = run_seed(seed, &params, &root).with_context(|| format!("seed {seed}"))?;
        if args.trace {
            for (at, line) in outcome.trace.lines() {
                println!("{} {line}", sim::trace::at(*at));
            }
        }
        summary(&outcome);
        println!("wall time {:.2}s", started.elapsed().as_secs_f64());
        if !outcome.violations.is_empty() {
            print!("{}", explain(&outcome, 60));
            bail!("seed {seed} broke the promises");
        }
        return Ok(());
    }

    let started = Instant::now();
    let next = AtomicU64::new(args.start);
    let end = args.start.saturating_add(args.seeds);
    let totals = Mutex::new(Totals::default());
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let done = Arc::new(AtomicU64::new(0));
    std::thread::scope(|scope| {
        for _ in 0..args.jobs.max(1) {
            scope.spawn(|| {
                loop {
                    let seed = next.fetch_add(1, Ordering::SeqCst);
                    if seed >= end {
                        break;
                    }
                    match run_seed(seed, &params, &root) {
                        Ok(outcome) => {
                            if !outcome.violations.is_empty() {
                                let text = explain(&outcome, 40);
                                eprint!("{text}");
                                failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(text);
                            }
                            totals.lock().unwrap_or_else(std::sync::PoisonError::into_inner).add(&outcome);
                        }
                        Err(err) => {
                            eprintln!("seed {seed}: {err}");
                            errors
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner)
                                .push(format!("seed {seed}: {err}"));
                        }
                    }
                    let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                    if n.is_multiple_of(100) {
                        eprintln!("{n} seeds in {:.0}s", started.elapsed().as_secs_f64());
                    }
                }
            });
        }
    });
    let mut totals = totals.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    totals.failed.sort_unstable();
    print!("{}", totals.render());
    println!("wall time: {:.0}s ({} jobs)", started.elapsed().as_secs_f64(), args.jobs.max(1));
    let errors = errors.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !errors.is_empty() {
        bail!("{} seeds could not run: {}", errors.len(), errors.join("; "));
    }
    if !totals.failed.is_empty() {
        bail!("{} of {} seeds broke the promises", totals.failed.len(), totals.seeds);
    }
    Ok(())
}

fn summary(o: &Outcome) {
    println!(
        "seed {}: simulated {:.1} min ({}s of faults, settled {}), {} writes committed, {} acknowledged, {} refused; {} versions, {} conflicts; faults: partitions {:?}, crashes {} ({} before an answer, {} at a store call), skews {} ({} beyond), signals {}; network: {} messages, {} lost, {} duplicated, {} delayed; trace {:016x} ({} events), state {:016x}; {} violations",
        o.seed,
        o.simulated_ms as f64 / 60_000.0,
        o.fault_ms / 1000,
        o.settled_after_ms
            .map_or("never".to_owned(), |ms| format!("{:.1}s after the heal", ms as f64 / 1000.0)),
        o.clients.committed,
        o.clients.acknowledged,
        o.clients.refused,
        o.versions,
        o.conflicts,
        o.faults.partitions,
        o.faults.crashes,
        o.faults.crashes_before_ack,
        o.faults.crashes_at_store_call,
        o.faults.skews,
        o.faults.skews_beyond_max,
        o.faults.signals,
        o.net.messages,
        o.net.lost,
        o.net.duplicated,
        o.net.delayed,
        o.trace_hash,
        o.trace.events(),
        o.state_hash,
        o.violations.len()
    );
}
