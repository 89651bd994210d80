use sessiondb::{NewSession, Options, SessionData, Store};
fn main() {
    let store = Store::in_memory_with(Options::default().reaper_interval(None)).unwrap();
    let mut d = SessionData::new();
    d.insert("profile", &"x".repeat(180)).unwrap();
    let users: Vec<String> = (0..100_000).map(|u| format!("user-{u}")).collect();
    for i in 0..1_000_000 {
        store.create(NewSession::for_user(users[i % 100_000].clone()).data(d.clone())).unwrap();
    }
    let t0 = std::time::Instant::now();
    let n = 300_000;
    for i in 0..n {
        store.create(NewSession::for_user(users[(i * 7) % 100_000].clone()).data(d.clone())).unwrap();
    }
    eprintln!("create {:?}/op", t0.elapsed() / n as u32);
}
