//! The README's quickstart: open a store, create a session, keep data in it, log in
//! (which rotates the token), list the user's devices, and sign out everywhere.
//!
//! Run it with `cargo run --example quickstart`.

use sessiondb::{NewSession, Store, Token};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A store in a directory of its own (here a fresh temporary one).
    let dir = std::env::temp_dir().join(format!("sessiondb-quickstart-{}", std::process::id()));
    let store = Store::open(&dir)?;

    // A visitor arrives: create a session; its token goes to the client as a cookie.
    let (token, session) = store.create(NewSession::anonymous().label("Firefox on Linux"))?;
    let cookie = token.to_string();
    println!(
        "new session {} (cookie: {} characters)",
        session.id(),
        cookie.len()
    );

    // A later request: parse the cookie strictly, then read and write session data.
    let token = Token::parse(&cookie)?;
    store.put(&token, "cart", &vec!["book", "lamp"])?;

    // Login: the token is rotated (session-fixation defence) and the user is bound.
    let token = store.login(&token, "alice")?;
    let session = store.get(&token).expect("the session is live");
    let cart: Vec<String> = session.get("cart")?.unwrap_or_default();
    println!(
        "{} is signed in, cart {:?}, session expires at {}",
        session.user().map(|u| u.as_str()).unwrap_or("nobody"),
        cart,
        session.expires_at()
    );

    // A second device signs in too.
    store.create(NewSession::for_user("alice").label("Safari on iPhone"))?;
    for device in store.sessions_of("alice")? {
        println!(
            "  device {}  {:<18} created {}",
            device.id(),
            device.label().unwrap_or("?"),
            device.created_at()
        );
    }

    // "Sign out everywhere".
    let ended = store.revoke_user("alice")?;
    println!("signed out of {ended} sessions");
    assert!(store.get(&token).is_none());

    drop(store);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
