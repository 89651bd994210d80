//! What the topics share: [`Fixture`], a store on disk in a tempdir on a manual clock;
//! reading a cookie off a client response; and the counter the apps of both the
//! acceptance checks and the helpers' server keep in the session.

use actix_session::Session;
use actix_web::HttpResponse;
use actix_web::cookie::Cookie;
use serde::{Deserialize, Serialize};
use sessiondb::actix_session::SessionDbStore;
use sessiondb::{ManualClock, Options, Store, Timestamp};
use tempfile::TempDir;

/// A store on disk in a tempdir, on a manual clock.
pub struct Fixture {
    _dir: TempDir,
    pub store: SessionDbStore,
    pub clock: ManualClock,
}

pub fn fixture_with(opts: impl FnOnce(Options) -> Options) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(Timestamp(1_700_000_000_000));
    let engine =
        Store::open_with(dir.path(), opts(Options::default().clock(clock.clone()))).unwrap();
    Fixture {
        _dir: dir,
        store: SessionDbStore::new(engine),
        clock,
    }
}

pub fn fixture() -> Fixture {
    fixture_with(|o| o)
}

impl Fixture {
    pub fn clock_now(&self) -> Timestamp {
        sessiondb::Clock::now(&self.clock)
    }
}

pub fn awc_cookie<S>(res: &actix_test::ClientResponse<S>, name: &str) -> Option<Cookie<'static>> {
    res.cookies()
        .unwrap()
        .iter()
        .find(|c| c.name() == name)
        .cloned()
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub struct Counter {
    pub user_id: Option<String>,
    pub counter: i32,
}

pub fn counter_of(session: &Session) -> Counter {
    Counter {
        user_id: session.get("user_id").unwrap(),
        counter: session.get("counter").unwrap_or(None).unwrap_or(0),
    }
}

pub async fn do_something(session: Session) -> actix_web::Result<HttpResponse> {
    let mut c = counter_of(&session);
    c.counter += 1;
    session.insert("counter", c.counter)?;
    Ok(HttpResponse::Ok().json(c))
}
