//! Micro-benchmarks of the engine on the in-memory store, over 1,000,000 sessions
//! spread across 100,000 users with ~200 bytes of data each (the brief's workload):
//! get-hit, get-miss, create, update, touch, sessions-of-user, rotate, end, and
//! revoke-user of a user with 10 sessions.
//!
//! `cargo bench -p sessiondb-bench --bench engine`; set `SESSIONDB_BENCH_SESSIONS` for a
//! smaller preload.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use sessiondb::{NewSession, Options, SessionData, Store, Token};

const USERS: usize = 100_000;

fn preload() -> (Store, Vec<Token>) {
    let n: usize = std::env::var("SESSIONDB_BENCH_SESSIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let store = Store::in_memory_with(Options::default().reaper_interval(None)).unwrap();
    let payload = "x".repeat(180);
    let tokens = (0..n)
        .map(|i| {
            let mut data = SessionData::new();
            data.insert("profile", &payload).unwrap();
            store
                .create(NewSession::for_user(format!("user-{}", i % USERS)).data(data))
                .unwrap()
                .0
        })
        .collect();
    (store, tokens)
}

fn engine(c: &mut Criterion) {
    let (store, tokens) = preload();
    let mut g = c.benchmark_group("engine");
    g.measurement_time(Duration::from_secs(5));

    let mut i = 0usize;
    g.bench_function("get_hit", |b| {
        b.iter(|| {
            i = (i + 7919) % tokens.len();
            black_box(store.get(&tokens[i]))
        })
    });

    let misses: Vec<Token> = (0..1024).map(|_| Token::generate().unwrap()).collect();
    let mut j = 0usize;
    g.bench_function("get_miss", |b| {
        b.iter(|| {
            j = (j + 1) % misses.len();
            black_box(store.get(&misses[j]))
        })
    });

    // Create, rotate and end leave the store as they found it (what they made is ended
    // outside the timing), so every benchmark here runs among N sessions, not among N
    // plus the millions a create benchmark makes.
    let mut k = 0usize;
    g.bench_function("create", |b| {
        b.iter_custom(|iters| {
            let mut made = Vec::with_capacity(iters as usize);
            let start = Instant::now();
            for _ in 0..iters {
                k += 1;
                let (token, session) = store
                    .create(NewSession::for_user(format!("bench-{}", k % USERS)))
                    .unwrap();
                black_box(session);
                made.push(token);
            }
            let took = start.elapsed();
            for t in &made {
                store.end(t).unwrap();
            }
            took
        })
    });

    let mut u = 0usize;
    g.bench_function("update", |b| {
        b.iter(|| {
            u = (u + 7919) % tokens.len();
            black_box(store.put(&tokens[u], "counter", &u).unwrap())
        })
    });

    let mut t = 0usize;
    g.bench_function("touch", |b| {
        b.iter(|| {
            t = (t + 7919) % tokens.len();
            store.touch(&tokens[t]).unwrap();
        })
    });

    let mut l = 0usize;
    g.bench_function("sessions_of_user", |b| {
        b.iter(|| {
            l = (l + 1) % USERS;
            black_box(store.sessions_of(&format!("user-{l}")).unwrap())
        })
    });

    // Rotate and end consume their session: each iteration gets a fresh one, made
    // outside the timing.
    g.bench_function("rotate", |b| {
        b.iter_custom(|iters| {
            let fresh: Vec<Token> = (0..iters)
                .map(|_| store.create(NewSession::for_user("rotating")).unwrap().0)
                .collect();
            let mut rotated = Vec::with_capacity(fresh.len());
            let start = Instant::now();
            for t in &fresh {
                rotated.push(store.rotate(t).unwrap());
            }
            let took = start.elapsed();
            for t in &rotated {
                store.end(t).unwrap();
            }
            took
        })
    });
    g.bench_function("end", |b| {
        b.iter_batched(
            || store.create(NewSession::for_user("ending")).unwrap().0,
            |tok| black_box(store.end(&tok).unwrap()),
            BatchSize::SmallInput,
        )
    });

    eprintln!("sessions in the store for revoke_user_10: {}", store.len());
    // Revoke a user who has exactly 10 sessions: set up outside the timing.
    let mut r = 0usize;
    g.bench_function("revoke_user_10", |b| {
        b.iter_batched(
            || {
                r += 1;
                let user = format!("revoke-{r}");
                for _ in 0..10 {
                    store.create(NewSession::for_user(user.clone())).unwrap();
                }
                user
            },
            |user| black_box(store.revoke_user(&user).unwrap()),
            BatchSize::SmallInput,
        )
    });
    g.finish();

    // The alternative without a user index: scan every session for the user's. A plain
    // HashMap of 1,000,000 entries with a u32 user field (generous to the scan), the
    // user's 10 sessions re-added outside the timing.
    let mut scan_group = c.benchmark_group("baseline");
    scan_group.sample_size(20);
    let mut map: std::collections::HashMap<u128, (u32, u64)> = (0..tokens.len() as u128)
        .map(|i| {
            (
                i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                ((i % 100_000) as u32, 0u64),
            )
        })
        .collect();
    let victim = 100_001u32;
    scan_group.bench_function("revoke_user_10_by_full_scan", |b| {
        b.iter_batched_ref(
            || (),
            |()| {
                for k in 0..10u128 {
                    map.insert(u128::MAX - k, (victim, 0));
                }
                map.retain(|_, (u, _)| *u != victim);
                black_box(map.len())
            },
            BatchSize::SmallInput,
        )
    });
    scan_group.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
