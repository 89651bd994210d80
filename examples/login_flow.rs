//! Login → rotate → logout-everywhere, watched through events: what an app that holds a
//! WebSocket per session would do to close sockets when their sessions end.
//!
//! Run it with `cargo run --example login_flow`.

use std::thread;
use std::time::Duration;

use sessiondb::{Event, NewSession, Options, Store};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store = Store::in_memory_with(
        Options::default()
            .idle_timeout(Duration::from_secs(30 * 60))
            .rotation_grace(Duration::from_secs(5)),
    )?;

    // The "socket manager": closes a socket whenever its session ends.
    let events = store.subscribe();
    let watcher = thread::spawn(move || {
        for event in events {
            match event {
                Event::Created { session, .. } => println!("[events] created {session}"),
                Event::Rotated { session } => println!("[events] rotated {session}"),
                Event::UserBound { session, user } => {
                    println!("[events] {user} signed in on {session}")
                }
                Event::Ended {
                    session, reason, ..
                } => {
                    println!("[events] {session} ended ({reason:?}): closing its socket")
                }
                Event::UserRevoked { user, sessions } => {
                    println!(
                        "[events] {user} signed out everywhere ({} sessions)",
                        sessions.len()
                    );
                    break;
                }
                other => println!("[events] {other:?}"),
            }
        }
    });

    // Anonymous visit, then login on the laptop: the token changes, the old one keeps
    // working for the grace period so in-flight requests are not logged out.
    let (visitor, _) = store.create(NewSession::anonymous().label("laptop"))?;
    store.put(&visitor, "theme", "dark")?;
    let laptop = store.login(&visitor, "alice")?;
    assert_eq!(
        store.get(&visitor).map(|s| s.id()),
        store.get(&laptop).map(|s| s.id())
    );

    // Alice signs in on her phone as well.
    let (phone, _) = store.create(NewSession::for_user("alice").label("phone"))?;

    // From the laptop's devices page: sign out everywhere.
    let n = store.revoke_user("alice")?;
    println!("revoked {n} sessions");
    assert!(store.get(&laptop).is_none() && store.get(&phone).is_none());
    assert!(
        store.get(&visitor).is_none(),
        "the old token died with its session"
    );

    watcher.join().expect("watcher thread");
    Ok(())
}
