//! The memory budget (section `budget`): resident memory through a flood of anonymous
//! creates with a budget and without (each in a child process of its own, this binary
//! re-run with `SESSIONDB_BENCH_CHILD=flood:<budget>`), the rate of creates that each
//! evict a session, and what the budget costs a create and a get, in rounds that
//! alternate a store with a budget (never reached) and one without.

use std::process::{Command, Stdio};
use std::time::Instant;

use sessiondb::{Budget, NewSession, Options, SessionData, Store, Token};

use crate::harness::{CHILD_ENV, Ctx, Rng, env_parse, payload};
use crate::memory::rss_bytes;
use crate::report::{Report, fmt_bytes, fmt_count, median};

/// Anonymous creates in a flood (`SESSIONDB_BENCH_FLOOD`).
const FLOOD: usize = 5_000_000;
/// The budget of the flood's budgeted run (`SESSIONDB_BENCH_FLOOD_BUDGET`).
const FLOOD_BUDGET: u64 = 1_000_000;
/// Rounds of the cost comparison.
const ROUNDS: usize = 7;
/// Creates per store per round.
const ROUND_CREATES: usize = 200_000;
/// Gets per store per round.
const ROUND_GETS: usize = 1_000_000;

/// A visitor's session data: the payload's ~200 bytes, in an allocation of its own (as
/// each real session's data is: a clone would share one buffer among all).
fn visitor_data() -> SessionData {
    let mut d = SessionData::new();
    d.insert("profile", &payload().profile_a)
        .expect("payload encodes");
    d
}

/// In the child: `spec` is the budget (0: none). Creates the flood on one thread,
/// sampling the resident set size, and prints `FLOOD peak final sessions evictions
/// secs evicting_creates evicting_secs`.
pub fn child_flood(spec: &str) {
    let budget: u64 = spec.parse().expect("a budget");
    let n: usize = env_parse("SESSIONDB_BENCH_FLOOD").unwrap_or(FLOOD);
    let opts = Options::default();
    let opts = match budget {
        0 => opts,
        b => opts.budget(Some(Budget::sessions(b))),
    };
    let store = Store::in_memory_with(opts).expect("store");
    let mut peak = rss_bytes();
    let started = Instant::now();
    let mut evicting: Option<(usize, Instant)> = None;
    for i in 0..n {
        store
            .create(NewSession::anonymous().data(visitor_data()))
            .expect("create");
        if evicting.is_none() && budget > 0 && i as u64 >= budget {
            evicting = Some((i, Instant::now()));
        }
        if i % 100_000 == 0 {
            peak = peak.max(rss_bytes());
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let (evicting_creates, evicting_secs) = evicting.map_or((0, 0.0), |(from, at)| {
        (n - from, at.elapsed().as_secs_f64())
    });
    let final_rss = rss_bytes();
    let st = store.stats();
    println!(
        "FLOOD {} {final_rss} {} {} {secs} {evicting_creates} {evicting_secs}",
        peak.max(final_rss),
        st.sessions,
        st.evictions
    );
}

struct Flood {
    budget: u64,
    peak: u64,
    final_rss: u64,
    sessions: u64,
    evictions: u64,
    secs: f64,
    evicting_rate: f64,
}

fn run_flood(ctx: &Ctx, budget: u64) -> Option<Flood> {
    let exe = std::env::current_exe().ok()?;
    ctx.progress(format_args!(
        "budget: a flood of anonymous creates, budget {}",
        if budget == 0 {
            "none".to_owned()
        } else {
            fmt_count(budget as f64)
        }
    ));
    let out = Command::new(exe)
        .env(CHILD_ENV, format!("flood:{budget}"))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text.lines().find(|l| l.starts_with("FLOOD "))?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    (v.len() == 7).then(|| Flood {
        budget,
        peak: v[0] as u64,
        final_rss: v[1] as u64,
        sessions: v[2] as u64,
        evictions: v[3] as u64,
        secs: v[4],
        evicting_rate: if v[6] > 0.0 { v[5] / v[6] } else { 0.0 },
    })
}

/// Creates and gets per second on a store with a budget it never reaches and on one
/// without, alternating, `ROUNDS` rounds: the medians of each.
fn cost_rounds(ctx: &Ctx) -> [(f64, f64); 2] {
    let stores = [
        Store::in_memory_with(Options::default()).expect("store"),
        Store::in_memory_with(Options::default().budget(Some(Budget::sessions(u64::MAX))))
            .expect("store"),
    ];
    let mut tokens: [Vec<Token>; 2] = [Vec::new(), Vec::new()];
    let mut creates = [Vec::new(), Vec::new()];
    let mut gets = [Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        ctx.progress(format_args!("budget: cost round {}/{ROUNDS}", round + 1));
        // Each store goes first in every other round.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let store = &stores[i];
            let t = Instant::now();
            for _ in 0..ROUND_CREATES {
                let (tok, _) = store
                    .create(NewSession::anonymous().data(visitor_data()))
                    .expect("create");
                tokens[i].push(tok);
            }
            creates[i].push(ROUND_CREATES as f64 / t.elapsed().as_secs_f64());
            let mut rng = Rng(0x5e55 + round as u64);
            let t = Instant::now();
            let mut hits = 0usize;
            for _ in 0..ROUND_GETS {
                let tok = &tokens[i][rng.below(tokens[i].len())];
                hits += usize::from(store.get(tok).is_some());
            }
            gets[i].push(ROUND_GETS as f64 / t.elapsed().as_secs_f64());
            assert_eq!(hits, ROUND_GETS, "every get hits");
        }
    }
    let [c0, c1] = creates;
    let [g0, g1] = gets;
    [(median(c0), median(g0)), (median(c1), median(g1))]
}

pub fn measure_budget(ctx: &Ctx, report: &mut Report) {
    let budget: u64 = env_parse("SESSIONDB_BENCH_FLOOD_BUDGET").unwrap_or(FLOOD_BUDGET);
    let n: usize = env_parse("SESSIONDB_BENCH_FLOOD").unwrap_or(FLOOD);
    let o = &mut report.budget;
    o.push(format!(
        "A flood of {} anonymous creates (each with the ~200 bytes of data of the other \
         runs), on one thread, in an in-memory store in a child process of its own: \
         VmRSS sampled every 100,000 creates; the budget evicts the least recently seen \
         anonymous session per create once full.\n",
        fmt_count(n as f64)
    ));
    o.push("| budget | peak RSS | RSS at the end | sessions at the end | evictions | creates/s (all) | creates/s evicting |".into());
    o.push("|---|---:|---:|---:|---:|---:|---:|".into());
    for b in [0, budget] {
        match run_flood(ctx, b) {
            Some(f) => o.push(format!(
                "| {} | {} | {} | {} | {} | {} | {} |",
                if f.budget == 0 {
                    "none".to_owned()
                } else {
                    fmt_count(f.budget as f64)
                },
                fmt_bytes(f.peak),
                fmt_bytes(f.final_rss),
                fmt_count(f.sessions as f64),
                fmt_count(f.evictions as f64),
                fmt_count(n as f64 / f.secs),
                if f.evicting_rate > 0.0 {
                    fmt_count(f.evicting_rate)
                } else {
                    "–".into()
                },
            )),
            None => report_skip(o, b),
        }
    }
    let [(c0, g0), (c1, g1)] = cost_rounds(ctx);
    o.push(format!(
        "\nWhat the budget costs when it is not reached, one thread, {ROUNDS} alternating \
         rounds (each store first in every other one) of {} creates and {} gets per \
         store (medians; above 1 means the budget is faster):\n",
        fmt_count(ROUND_CREATES as f64),
        fmt_count(ROUND_GETS as f64)
    ));
    o.push("| op | no budget | budget | budget ÷ none |".into());
    o.push("|---|---:|---:|---:|".into());
    o.push(format!(
        "| create | {}/s | {}/s | {:.3} |",
        fmt_count(c0),
        fmt_count(c1),
        c1 / c0
    ));
    o.push(format!(
        "| get-hit | {}/s | {}/s | {:.3} |",
        fmt_count(g0),
        fmt_count(g1),
        g1 / g0
    ));
}

fn report_skip(o: &mut Vec<String>, budget: u64) {
    o.push(format!("| {budget} | child failed | | | | | |"));
}
