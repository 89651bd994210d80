//! The operations every backend shares, run against each through the public async
//! handle [`Sessions`]: the embedded store in memory, the embedded store on its log
//! with `Durability::Sync`, Redis (a `redis-server` this test starts on a free port),
//! and a three-primary Redis Cluster (three more, joined by `redis-cli --cluster
//! create`). Redis is skipped with a message if it is not installed, unless
//! `SESSIONDB_REQUIRE_REDIS=1`. One scenario, four backends: a difference between them
//! is a failure.

#[path = "support/redis_server.rs"]
mod redis_server;

#[cfg(feature = "postgres")]
#[path = "support/postgres_server.rs"]
mod postgres_server;

use redis_server::{NO_PERSISTENCE, RedisCluster, RedisServer};
use std::collections::HashSet;
use std::time::Duration;

use sessiondb::{
    AddressPrivacy, Criterion, Device, Durability, EndReason, Error, Event, NewSession, Options,
    RedisOptions, RedisStore, Session, SessionData, SessionId, SessionRecord, Sessions, SignIn,
    Timestamp, Token,
};

/// A backend for one test, and what keeps it alive.
struct Backend {
    sessions: Sessions,
    _dir: Option<tempfile::TempDir>,
    _server: Option<RedisServer>,
    _cluster: Option<RedisCluster>,
}

impl std::ops::Deref for Backend {
    type Target = Sessions;
    fn deref(&self) -> &Sessions {
        &self.sessions
    }
}

async fn memory(opts: Options) -> Option<Backend> {
    let opts = opts.durability(Durability::Memory);
    Some(Backend {
        sessions: Sessions::open("memory:", opts).await.unwrap(),
        _dir: None,
        _server: None,
        _cluster: None,
    })
}

async fn log(opts: Options) -> Option<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let opts = opts.durability(Durability::Sync);
    let sessions = Sessions::open(dir.path().to_str().unwrap(), opts)
        .await
        .unwrap();
    Some(Backend {
        sessions,
        _dir: Some(dir),
        _server: None,
        _cluster: None,
    })
}

async fn redis(opts: Options) -> Option<Backend> {
    let server = RedisServer::start(NO_PERSISTENCE)?;
    let store = RedisStore::connect_with(
        &server.url(),
        opts,
        RedisOptions::default().prefix("{test}"),
    )
    .await
    .unwrap();
    Some(Backend {
        sessions: Sessions::redis(store),
        _dir: None,
        _server: Some(server),
        _cluster: None,
    })
}

/// PostgreSQL (feature `postgres`): a schema of its own on one cluster shared by the
/// process (or the server `SESSIONDB_TEST_POSTGRES_URL` names).
#[cfg(feature = "postgres")]
async fn postgres(opts: Options) -> Option<Backend> {
    let url = tokio::task::spawn_blocking(postgres_server::shared_url)
        .await
        .unwrap()?;
    let popts = sessiondb::PostgresOptions::default()
        .schema(postgres_server::fresh_schema())
        .pool_size(8);
    let store = sessiondb::PostgresStore::connect_with(&url, opts, popts)
        .await
        .unwrap();
    Some(Backend {
        sessions: Sessions::postgres(store),
        _dir: None,
        _server: None,
        _cluster: None,
    })
}

/// A three-primary Redis Cluster; the store's keys share the hash tag `{test}`.
async fn redis_cluster(opts: Options) -> Option<Backend> {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3))
        .await
        .unwrap()?;
    let urls = cluster.urls();
    let seeds: Vec<&str> = urls.iter().map(String::as_str).collect();
    let store = RedisStore::connect_cluster(&seeds, opts, RedisOptions::default().prefix("{test}"))
        .await
        .unwrap();
    Some(Backend {
        sessions: Sessions::redis(store),
        _dir: None,
        _server: None,
        _cluster: Some(cluster),
    })
}

/// The options a scenario asks for, or the defaults.
macro_rules! opts {
    () => {
        sessiondb::Options::default()
    };
    ($opts:expr) => {
        $opts
    };
}
use opts;

/// Generates, for each scenario `name(backend)`, one test per backend.
macro_rules! on_every_backend {
    ($($name:ident $(with $opts:expr)?;)*) => {
        mod embedded_memory { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let opts = super::opts!($($opts)?);
                let b = super::memory(opts).await.unwrap();
                super::$name(&b).await;
            }
        )* }
        mod embedded_log { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let opts = super::opts!($($opts)?);
                let b = super::log(opts).await.unwrap();
                super::$name(&b).await;
            }
        )* }
        mod redis { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let opts = super::opts!($($opts)?);
                let Some(b) = super::redis(opts).await else { return };
                super::$name(&b).await;
            }
        )* }
        mod redis_cluster { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let opts = super::opts!($($opts)?);
                let Some(b) = super::redis_cluster(opts).await else { return };
                super::$name(&b).await;
            }
        )* }
        #[cfg(feature = "postgres")]
        mod postgres { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let opts = super::opts!($($opts)?);
                let Some(b) = super::postgres(opts).await else { return };
                super::$name(&b).await;
            }
        )* }
    };
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Options for a test that waits for real time to pass: no background reaper.
fn no_reaper() -> Options {
    Options::default().reaper_interval(None)
}

fn now() -> Timestamp {
    Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64,
    )
}

/// The next event within 5 seconds (Redis delivers through a stream reader).
fn next(rx: &crossbeam_channel::Receiver<Event>) -> Event {
    rx.recv_timeout(Duration::from_secs(5))
        .expect("an event within 5 s")
}

on_every_backend! {
    created_session_is_found_by_its_token_and_unknown_tokens_are_not;
    session_is_never_returned_past_its_absolute_deadline_even_unreaped with super::no_reaper();
    idle_timeout_slides_with_activity with super::no_reaper().touch_interval(super::ms(0));
    session_created_with_data_has_it_at_version_zero;
    typed_data_put_get_remove_and_versions;
    compare_and_swap_save_refuses_a_stale_version;
    concurrent_updates_never_lose_each_other;
    update_that_fails_saves_nothing;
    ending_is_final_no_write_or_touch_resurrects;
    a_late_save_after_an_end_never_resurrects;
    rotation_keeps_id_data_and_user_and_old_token_lives_out_its_grace with sessiondb::Options::default().rotation_grace(super::ms(800));
    rotation_with_zero_grace_retires_the_old_token_at_once with sessiondb::Options::default().rotation_grace(super::ms(0));
    ending_through_an_old_token_in_grace_ends_the_session;
    login_rotates_and_binds;
    binding_another_user_moves_the_session_between_user_indexes;
    unbinding_keeps_the_session_and_leaves_the_users_index;
    sessions_of_user_lists_devices_oldest_first;
    revoke_user_ends_all_and_only_that_users_sessions;
    end_by_public_id_signs_out_one_device;
    per_user_limit_refuses_when_configured with sessiondb::Options::default().max_sessions_per_user(Some(2), sessiondb::LimitPolicy::Refuse);
    per_user_limit_ends_the_oldest_when_configured with sessiondb::Options::default().max_sessions_per_user(Some(2), sessiondb::LimitPolicy::EndOldest);
    events_report_lifecycle_by_public_id;
    reaper_reports_expiry_with_the_user with sessiondb::Options::default().reaper_interval(Some(super::ms(100)));
    bad_input_is_refused_with_typed_errors_and_changes_nothing;
    clear_ends_everything;
    create_with_token_addresses_the_session_by_that_token_and_refuses_a_taken_one;
    export_then_import_answers_to_the_same_tokens;
    set_expiry_moves_the_deadline_both_ways_and_a_past_one_ends_the_session_as_expired;
    extend_never_shortens_and_touch_refuses_an_ended_session;
    revoking_a_user_with_many_sessions_some_rotated_ends_every_one;
    revoke_racing_creates_for_the_same_user_leaves_no_session_behind_or_lost;
    revoke_others_ends_every_other_session_of_the_user_and_keeps_this_one;
    revoke_others_racing_creates_and_logins_leaves_this_one_and_nothing_half_revoked;
    revoke_others_by_id_keeps_that_session_and_ends_the_users_others;
    revoke_user_before_ends_the_sessions_authenticated_earlier_and_keeps_the_later_ones;
    revoke_user_before_in_the_future_counts_as_now_and_holds_no_login_back;
    not_before_times_lists_each_users_latest_time;
    an_import_authenticated_before_the_users_not_before_is_refused;
    revoke_user_before_racing_creates_and_logins_leaves_nothing_older_readable;
    auth_lifetime_counts_from_the_last_login with super::no_reaper().auth_lifetime(Some(super::ms(900)));
    reads_rearm_the_idle_deadline_at_most_once_per_touch_interval with super::no_reaper().touch_interval(super::ms(1000));
    a_version_never_wraps_an_import_must_leave_room_and_the_last_change_is_refused with sessiondb::Options::default().rotation_grace(super::ms(0));
    a_budget_evicts_the_least_recently_seen_anonymous_sessions_and_never_a_signed_in_one with super::no_reaper().touch_interval(super::ms(0)).budget(Some(sessiondb::Budget::sessions(5)));
    a_budget_full_of_signed_in_sessions_refuses_creates_with_full with sessiondb::Options::default().budget(Some(sessiondb::Budget::sessions(2)));
    a_trial_session_ends_at_its_trial_unless_a_later_request_uses_it with super::no_reaper().trial_lifetime(Some(super::ms(700)));
    login_with_records_how_the_user_signed_in_and_a_plain_login_or_logout_forgets_it;
    step_up_rotates_the_token_and_adds_its_methods_at_their_level;
    a_sign_in_that_breaks_the_rules_is_refused_before_anything_changes with sessiondb::Options::default().rotation_grace(super::ms(0));
    an_elevated_level_ends_after_its_lifetime_and_the_session_stays with super::no_reaper().level_lifetime(2, super::ms(600));
    authenticated_within_answers_the_sudo_mode_question with super::no_reaper();
    revoke_user_where_ends_the_sessions_that_used_a_method_or_are_below_a_level with super::no_reaper().level_lifetime(3, super::ms(400));
    revoke_user_where_racing_step_ups_judges_each_session_by_what_it_recorded;
    a_device_is_recorded_at_create_and_on_change_at_most_once_per_touch_interval with super::no_reaper().touch_interval(super::ms(700));
    addresses_are_kept_truncated_by_default;
    the_full_address_is_kept_only_when_asked with sessiondb::Options::default().address_privacy(sessiondb::AddressPrivacy::Full);
    no_address_is_kept_when_omitted with sessiondb::Options::default().address_privacy(sessiondb::AddressPrivacy::Omit);
    factors_and_devices_survive_export_and_import_and_an_import_keeps_only_what_the_store_keeps;
    bind_user_with_and_add_sign_in_record_how_without_rotating;
}

async fn bind_user_with_and_add_sign_in_record_how_without_rotating(s: &Sessions) {
    let (t, _) = s.create(NewSession::anonymous()).await.unwrap();
    assert!(matches!(
        s.add_sign_in(&t, SignIn::with("otp")).await,
        Err(Error::NotSignedIn)
    ));
    s.bind_user_with(&t, "alice", SignIn::with("password"))
        .await
        .unwrap();
    let got = s.get(&t).await.unwrap().expect("the same token");
    assert_eq!(methods(&got), [("password", 1)]);
    s.add_sign_in(&t, SignIn::with("otp").level(2))
        .await
        .unwrap();
    let got = s.get(&t).await.unwrap().expect("still the same token");
    assert_eq!(methods(&got), [("password", 1), ("otp", 2)]);
    assert_eq!(got.level(), 2);
    // A plain bind forgets how.
    s.bind_user(&t, "alice").await.unwrap();
    assert!(s.get(&t).await.unwrap().unwrap().factors().is_empty());
    assert!(matches!(
        s.bind_user_with(&t, "alice", SignIn::with("")).await,
        Err(Error::InvalidSignIn { .. })
    ));
    assert!(matches!(
        s.add_sign_in(&Token::generate().unwrap(), SignIn::with("otp"))
            .await,
        Err(Error::Ended)
    ));
}

fn ip(s: &str) -> std::net::IpAddr {
    s.parse().unwrap()
}

fn methods(s: &Session) -> Vec<(&str, u8)> {
    s.factors()
        .iter()
        .map(|f| (f.method(), f.level()))
        .collect()
}

async fn login_with_records_how_the_user_signed_in_and_a_plain_login_or_logout_forgets_it(
    s: &Sessions,
) {
    let (visitor, v) = s.create(NewSession::anonymous()).await.unwrap();
    assert!(v.factors().is_empty() && v.level() == 0);
    let how = SignIn::with("password").and("otp").level(2);
    let t = s.login_with(&visitor, "alice", how).await.unwrap();
    assert_ne!(t, visitor, "a login rotates");
    let got = s.get(&t).await.unwrap().unwrap();
    assert_eq!(methods(&got), [("password", 2), ("otp", 2)]);
    assert_eq!(got.level(), 2);
    let at = got.factors()[0].at();
    assert!(at >= got.authenticated_at().unwrap() && at <= now());
    // Listed with them on the devices page.
    let listed = s.sessions_of("alice").await.unwrap();
    assert_eq!(methods(&listed[0]), [("password", 2), ("otp", 2)]);
    // A plain login says nothing of how: the factors go.
    let t = s.login(&t, "alice").await.unwrap();
    assert!(s.get(&t).await.unwrap().unwrap().factors().is_empty());
    let t = s
        .login_with(&t, "alice", SignIn::with("webauthn").level(3))
        .await
        .unwrap();
    assert_eq!(s.get(&t).await.unwrap().unwrap().level(), 3);
    // So does a logout (the session stays, anonymous).
    s.unbind_user(&t).await.unwrap();
    let after = s.get(&t).await.unwrap().unwrap();
    assert!(after.factors().is_empty() && after.level() == 0);
    // A session created for a user may say how it signed in, in the same step.
    let (c, created) = s
        .create(NewSession::for_user("bob").signed_in(SignIn::with("passkey").level(2)))
        .await
        .unwrap();
    assert_eq!(methods(&created), [("passkey", 2)]);
    assert_eq!(
        methods(&s.get(&c).await.unwrap().unwrap()),
        [("passkey", 2)]
    );
}

async fn step_up_rotates_the_token_and_adds_its_methods_at_their_level(s: &Sessions) {
    let (visitor, _) = s.create(NewSession::anonymous()).await.unwrap();
    let t = s
        .login_with(&visitor, "alice", SignIn::with("password"))
        .await
        .unwrap();
    let before = s.get(&t).await.unwrap().unwrap();
    next_ms().await;
    let up = s.step_up(&t, SignIn::with("otp").level(2)).await.unwrap();
    assert_ne!(up, t, "a privilege change rotates the token");
    let got = s.get(&up).await.unwrap().unwrap();
    assert_eq!(got.id(), before.id());
    assert_eq!(methods(&got), [("password", 1), ("otp", 2)]);
    assert_eq!(got.level(), 2);
    assert_eq!(
        got.authenticated_at(),
        before.authenticated_at(),
        "not a new login"
    );
    // The same method again replaces its entry, at the new level and time.
    next_ms().await;
    let up2 = s
        .step_up(&up, SignIn::with("password").level(2))
        .await
        .unwrap();
    let again = s.get(&up2).await.unwrap().unwrap();
    assert_eq!(methods(&again), [("otp", 2), ("password", 2)]);
    assert!(again.factors()[1].at() > got.factors()[0].at());
    // A step-up needs a signed-in user.
    let (anon, _) = s.create(NewSession::anonymous()).await.unwrap();
    assert!(matches!(
        s.step_up(&anon, SignIn::with("otp")).await,
        Err(Error::NotSignedIn)
    ));
    assert!(
        s.get(&anon).await.unwrap().is_some(),
        "and was not rotated away"
    );
    assert!(matches!(
        s.step_up(&Token::generate().unwrap(), SignIn::with("otp"))
            .await,
        Err(Error::Ended)
    ));
}

async fn a_sign_in_that_breaks_the_rules_is_refused_before_anything_changes(s: &Sessions) {
    let (visitor, _) = s.create(NewSession::anonymous()).await.unwrap();
    let bad = [
        SignIn::with(""),
        SignIn::with("pass word"),
        SignIn::with("x".repeat(33)),
        SignIn::with("otp").and("otp"),
        (0..8).fold(SignIn::with("m"), |h, i| h.and(format!("m{i}"))),
    ];
    for how in bad.clone() {
        assert!(
            matches!(
                s.login_with(&visitor, "alice", how.clone()).await,
                Err(Error::InvalidSignIn { .. })
            ),
            "{how:?}"
        );
        assert!(matches!(
            s.create(NewSession::for_user("alice").signed_in(how)).await,
            Err(Error::InvalidSignIn { .. })
        ));
    }
    // Nothing changed: the visitor is still there under its token (rotation grace 0).
    let v = s.get(&visitor).await.unwrap().unwrap();
    assert!(v.user().is_none());
    assert!(s.sessions_of("alice").await.unwrap().is_empty());
    // An anonymous session has no sign-in.
    assert!(matches!(
        s.create(NewSession::anonymous().signed_in(SignIn::with("otp")))
            .await,
        Err(Error::InvalidSignIn { .. })
    ));
    // More than eight methods on a session: refused before the rotation.
    let t = s
        .login_with(
            &visitor,
            "alice",
            (1..8).fold(SignIn::with("m0"), |h, i| h.and(format!("m{i}"))),
        )
        .await
        .unwrap();
    assert!(matches!(
        s.step_up(&t, SignIn::with("one-more")).await,
        Err(Error::InvalidSignIn { .. })
    ));
    assert_eq!(s.get(&t).await.unwrap().unwrap().factors().len(), 8);
    // Replacing one of the eight is fine.
    let t = s.step_up(&t, SignIn::with("m3").level(2)).await.unwrap();
    assert_eq!(s.get(&t).await.unwrap().unwrap().level(), 2);
    // A bad criterion is refused too.
    assert!(matches!(
        s.revoke_user_where("alice", &Criterion::Method("a b".into()))
            .await,
        Err(Error::InvalidSignIn { .. })
    ));
}

async fn an_elevated_level_ends_after_its_lifetime_and_the_session_stays(s: &Sessions) {
    let (visitor, _) = s.create(NewSession::anonymous()).await.unwrap();
    let t = s
        .login_with(&visitor, "alice", SignIn::with("password"))
        .await
        .unwrap();
    let t = s.step_up(&t, SignIn::with("otp").level(2)).await.unwrap();
    assert_eq!(s.get(&t).await.unwrap().unwrap().level(), 2);
    tokio::time::sleep(ms(800)).await;
    let got = s.get(&t).await.unwrap().expect("the session stays");
    assert_eq!(got.level(), 1, "level 2 lasted 600 ms");
    assert_eq!(
        got.factors().len(),
        2,
        "the record of how it signed in stays"
    );
    assert!(!got.authenticated_within(2, Duration::from_secs(3600)));
    assert!(got.authenticated_within(1, Duration::from_secs(3600)));
    // A new step-up raises it again.
    let t = s.step_up(&t, SignIn::with("otp").level(2)).await.unwrap();
    assert_eq!(s.get(&t).await.unwrap().unwrap().level(), 2);
}

async fn authenticated_within_answers_the_sudo_mode_question(s: &Sessions) {
    let (visitor, _) = s.create(NewSession::anonymous()).await.unwrap();
    let plain = s.login(&visitor, "alice").await.unwrap();
    let got = s.get(&plain).await.unwrap().unwrap();
    assert!(
        got.authenticated_within(0, Duration::from_secs(60)),
        "any login"
    );
    assert!(
        !got.authenticated_within(1, Duration::from_secs(60)),
        "no factor"
    );
    let t = s
        .login_with(&plain, "alice", SignIn::with("password"))
        .await
        .unwrap();
    tokio::time::sleep(ms(400)).await;
    let got = s.get(&t).await.unwrap().unwrap();
    assert!(got.authenticated_within(1, Duration::from_secs(60)));
    assert!(!got.authenticated_within(1, ms(200)), "400 ms ago");
    assert!(
        !got.authenticated_within(2, Duration::from_secs(60)),
        "level 1 only"
    );
    let up = s.step_up(&t, SignIn::with("otp").level(2)).await.unwrap();
    let got = s.get(&up).await.unwrap().unwrap();
    assert!(got.authenticated_within(2, ms(200)));
    assert!(
        got.authenticated_within(1, ms(200)),
        "a higher level answers a lower"
    );
    // A visitor never has.
    let (anon, _) = s.create(NewSession::anonymous()).await.unwrap();
    let a = s.get(&anon).await.unwrap().unwrap();
    assert!(!a.authenticated_within(0, Duration::MAX));
}

async fn revoke_user_where_ends_the_sessions_that_used_a_method_or_are_below_a_level(s: &Sessions) {
    let login = |how: Option<SignIn>| async move {
        let (v, _) = s.create(NewSession::anonymous()).await.unwrap();
        match how {
            Some(how) => s.login_with(&v, "alice", how).await.unwrap(),
            None => s.login(&v, "alice").await.unwrap(),
        }
    };
    let sms = login(Some(SignIn::with("password").and("sms").level(2))).await;
    let pw = login(Some(SignIn::with("password"))).await;
    let key = login(Some(SignIn::with("webauthn").level(3))).await;
    let plain = login(None).await;
    let bobs = s
        .create(NewSession::for_user("bob").signed_in(SignIn::with("sms")))
        .await
        .unwrap()
        .0;
    // Everyone who used SMS, and only alice's.
    let n = s
        .revoke_user_where("alice", &Criterion::Method("sms".into()))
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert!(s.get(&sms).await.unwrap().is_none());
    assert!(s.get(&bobs).await.unwrap().is_some());
    // Below level 1: the plain login (level 0).
    assert_eq!(
        s.revoke_user_where("alice", &Criterion::BelowLevel(1))
            .await
            .unwrap(),
        1
    );
    assert!(s.get(&plain).await.unwrap().is_none());
    // Level 3 lasts 400 ms: after it, the key's session is at level 0 and goes with
    // the password one below level 2.
    assert_eq!(
        s.revoke_user_where("alice", &Criterion::BelowLevel(2))
            .await
            .unwrap(),
        1
    );
    assert!(s.get(&key).await.unwrap().is_some() && s.get(&pw).await.unwrap().is_none());
    tokio::time::sleep(ms(600)).await;
    assert_eq!(
        s.revoke_user_where("alice", &Criterion::BelowLevel(2))
            .await
            .unwrap(),
        1
    );
    assert!(s.sessions_of("alice").await.unwrap().is_empty());
    assert_eq!(
        s.revoke_user_where("nobody", &Criterion::BelowLevel(9))
            .await
            .unwrap(),
        0
    );
}

async fn revoke_user_where_racing_step_ups_judges_each_session_by_what_it_recorded(s: &Sessions) {
    let mut tasks = Vec::new();
    for k in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..30 {
                let (v, _) = s.create(NewSession::anonymous()).await.unwrap();
                let t = s
                    .login_with(&v, "racer", SignIn::with("password"))
                    .await
                    .unwrap();
                let t = if (i + k) % 2 == 0 {
                    match s.step_up(&t, SignIn::with("sms").level(2)).await {
                        Ok(up) => up,
                        Err(Error::Ended) => t, // revoked between the two
                        Err(e) => panic!("{e}"),
                    }
                } else {
                    t
                };
                mine.push(t);
            }
            mine
        }));
    }
    let mut revoked = 0;
    for _ in 0..5 {
        tokio::time::sleep(ms(2)).await;
        revoked += s
            .revoke_user_where("racer", &Criterion::Method("sms".into()))
            .await
            .unwrap();
    }
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.extend(t.await.unwrap());
    }
    // Once more, with nothing racing: every session that used SMS goes, and no other.
    revoked += s
        .revoke_user_where("racer", &Criterion::Method("sms".into()))
        .await
        .unwrap();
    let mut live = 0;
    for t in &tokens {
        if let Some(x) = s.peek(t).await.unwrap() {
            assert!(x.factors().iter().all(|f| f.method() != "sms"));
            live += 1;
        }
    }
    let listed = s.sessions_of("racer").await.unwrap();
    assert_eq!(listed.len(), live, "the index lists only live sessions");
    assert!(listed.iter().all(|x| x.level() == 1));
    assert_eq!(live, 60, "every password-only session stays");
    assert_eq!(live + revoked, 120, "every session is live or revoked");
}

async fn a_device_is_recorded_at_create_and_on_change_at_most_once_per_touch_interval(
    s: &Sessions,
) {
    let firefox = Device::new()
        .user_agent("Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0")
        .address(ip("198.51.100.23"));
    let (t, created) = s
        .create(NewSession::anonymous().device(firefox.clone()))
        .await
        .unwrap();
    assert_eq!(
        created.user_agent(),
        Some("Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0")
    );
    assert_eq!(created.address(), Some(ip("198.51.100.0")));
    let at = created.device_seen_at().unwrap();
    // The same device: nothing to write, and with the session already read, not even
    // a lookup.
    assert!(!s.seen_from(&t, &firefox).await.unwrap());
    let read = s.get(&t).await.unwrap().unwrap();
    assert!(!s.seen_from_if_changed(&t, &read, &firefox).await.unwrap());
    // Another network, within the touch interval: not yet.
    let moved = firefox.clone().address(ip("203.0.113.9"));
    assert!(!s.seen_from(&t, &moved).await.unwrap());
    assert_eq!(
        s.peek(&t).await.unwrap().unwrap().address(),
        Some(ip("198.51.100.0"))
    );
    let read = s.get(&t).await.unwrap().unwrap();
    assert!(!s.seen_from_if_changed(&t, &read, &moved).await.unwrap());
    tokio::time::sleep(ms(900)).await;
    // Past the touch interval: a snapshot read now says it is due, and it is written.
    let read = s.get(&t).await.unwrap().unwrap();
    assert!(s.seen_from_if_changed(&t, &read, &moved).await.unwrap());
    assert!(!s.seen_from(&t, &moved).await.unwrap(), "written once");
    let got = s.peek(&t).await.unwrap().unwrap();
    assert_eq!(got.address(), Some(ip("203.0.113.0")));
    assert!(got.device_seen_at().unwrap() > at);
    // The same /24: the same device as kept.
    tokio::time::sleep(ms(900)).await;
    assert!(
        !s.seen_from(&t, &firefox.clone().address(ip("203.0.113.200")))
            .await
            .unwrap()
    );
    // A long header is cut, control characters dropped; nothing at all records nothing.
    let long = format!("A\n{}", "é".repeat(600));
    assert!(
        s.seen_from(&t, &Device::new().user_agent(long))
            .await
            .unwrap()
    );
    let ua = s
        .peek(&t)
        .await
        .unwrap()
        .unwrap()
        .user_agent()
        .unwrap()
        .to_owned();
    assert!(ua.starts_with("Aé") && ua.len() <= Device::MAX_USER_AGENT_BYTES);
    assert!(!s.seen_from(&t, &Device::new()).await.unwrap());
    assert!(
        !s.seen_from(&t, &Device::new().user_agent(" \t "))
            .await
            .unwrap()
    );
    // An ended session is not seen from anywhere.
    s.end(&t).await.unwrap();
    assert!(matches!(s.seen_from(&t, &firefox).await, Err(Error::Ended)));
    // The device survives a login (it is the client's, not the user's).
    let (v, _) = s
        .create(NewSession::anonymous().device(firefox.clone()))
        .await
        .unwrap();
    let u = s
        .login_with(&v, "alice", SignIn::with("password"))
        .await
        .unwrap();
    assert_eq!(
        s.peek(&u).await.unwrap().unwrap().address(),
        Some(ip("198.51.100.0"))
    );
}

async fn addresses_are_kept_truncated_by_default(s: &Sessions) {
    for (given, kept) in [
        ("192.0.2.77", "192.0.2.0"),
        ("2001:db8:1234:5678:9abc:def0:1:2", "2001:db8:1234::"),
        ("::ffff:192.0.2.77", "192.0.2.0"),
    ] {
        let (t, _) = s
            .create(NewSession::anonymous().device(Device::new().address(ip(given))))
            .await
            .unwrap();
        assert_eq!(s.get(&t).await.unwrap().unwrap().address(), Some(ip(kept)));
        assert_eq!(s.get(&t).await.unwrap().unwrap().user_agent(), None);
    }
}

async fn the_full_address_is_kept_only_when_asked(s: &Sessions) {
    let (t, _) = s
        .create(NewSession::anonymous().device(Device::new().address(ip("192.0.2.77"))))
        .await
        .unwrap();
    assert_eq!(
        s.get(&t).await.unwrap().unwrap().address(),
        Some(ip("192.0.2.77"))
    );
}

async fn no_address_is_kept_when_omitted(s: &Sessions) {
    let d = Device::new().user_agent("curl/8").address(ip("192.0.2.77"));
    let (t, _) = s.create(NewSession::anonymous().device(d)).await.unwrap();
    let got = s.get(&t).await.unwrap().unwrap();
    assert_eq!((got.address(), got.user_agent()), (None, Some("curl/8")));
    let (t, _) = s
        .create(NewSession::anonymous().device(Device::new().address(ip("192.0.2.77"))))
        .await
        .unwrap();
    assert_eq!(s.get(&t).await.unwrap().unwrap().device_seen_at(), None);
}

async fn factors_and_devices_survive_export_and_import_and_an_import_keeps_only_what_the_store_keeps(
    s: &Sessions,
) {
    let (t, _) = s
        .create(
            NewSession::for_user("alice")
                .signed_in(SignIn::with("password").and("otp").level(2))
                .device(Device::new().user_agent("Safari").address(ip("192.0.2.77"))),
        )
        .await
        .unwrap();
    let (v, _) = s
        .create(NewSession::anonymous().device(Device::new().user_agent("curl/8")))
        .await
        .unwrap();
    let mut records = Vec::new();
    s.export(|r| {
        records.push(r);
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(records.len(), 2);
    let original = s.peek(&t).await.unwrap().unwrap();
    for (privacy, address) in [
        (AddressPrivacy::Full, Some(ip("192.0.2.0"))),
        (AddressPrivacy::Omit, None),
    ] {
        let other = Sessions::open("memory:", Options::default().address_privacy(privacy))
            .await
            .unwrap();
        for r in records.clone() {
            assert!(other.import(r).await.unwrap());
        }
        let got = other.get(&t).await.unwrap().unwrap();
        assert_eq!(got.factors(), original.factors());
        assert_eq!(got.level(), 2);
        assert_eq!(got.user_agent(), Some("Safari"));
        assert_eq!(got.address(), address, "{privacy:?}");
        let anon = other.get(&v).await.unwrap().unwrap();
        assert_eq!(anon.user_agent(), Some("curl/8"));
    }
    // Back into a store of this backend's kind, after the originals ended.
    s.end(&t).await.unwrap();
    s.end(&v).await.unwrap();
    for r in records {
        assert!(s.import(r).await.unwrap());
    }
    let back = s.get(&t).await.unwrap().unwrap();
    assert_eq!(back.factors(), original.factors());
    assert_eq!(back.device_seen_at(), original.device_seen_at());
    assert_eq!(back.address(), Some(ip("192.0.2.0")));
    // A record whose factors break the rules is refused with a typed error.
    let mut bad = SessionRecord::clone(&{
        let mut v = Vec::new();
        s.export(|r| {
            v.push(r);
            Ok(())
        })
        .await
        .unwrap();
        v.into_iter().find(|r| r.user.is_some()).unwrap()
    });
    s.end(&t).await.unwrap();
    bad.factors
        .push(sessiondb::Factor::new("otp", 1, Timestamp(1)));
    assert!(matches!(
        s.import(bad).await,
        Err(Error::InvalidSignIn { .. })
    ));
}

async fn created_session_is_found_by_its_token_and_unknown_tokens_are_not(s: &Sessions) {
    let (token, created) = s
        .create(NewSession::for_user("alice").label("Firefox"))
        .await
        .unwrap();
    let got = s.get(&token).await.unwrap().expect("live");
    assert_eq!(got.id(), created.id());
    assert_eq!(got.user().map(|u| u.as_str()), Some("alice"));
    assert_eq!(got.label(), Some("Firefox"));
    assert_eq!(got.version(), 0);
    assert!(got.authenticated_at().is_some());
    assert!(s.get(&Token::generate().unwrap()).await.unwrap().is_none());
    assert_eq!(s.len().await.unwrap(), 1);
}

async fn session_is_never_returned_past_its_absolute_deadline_even_unreaped(s: &Sessions) {
    let (token, _) = s
        .create(NewSession::for_user("alice").lifetime(ms(600)))
        .await
        .unwrap();
    assert!(s.get(&token).await.unwrap().is_some());
    tokio::time::sleep(ms(800)).await;
    assert!(s.get(&token).await.unwrap().is_none());
    assert!(s.peek(&token).await.unwrap().is_none());
    assert!(s.sessions_of("alice").await.unwrap().is_empty());
    assert!(matches!(s.put(&token, "k", &1).await, Err(Error::Ended)));
    assert!(matches!(s.touch(&token).await, Err(Error::Ended)));
}

async fn idle_timeout_slides_with_activity(s: &Sessions) {
    let (token, _) = s
        .create(NewSession::anonymous().idle_timeout(ms(1500)))
        .await
        .unwrap();
    // Four reads 400 ms apart: 1.6 s in all, longer than the idle timeout.
    for _ in 0..4 {
        tokio::time::sleep(ms(400)).await;
        assert!(s.get(&token).await.unwrap().is_some(), "activity keeps it");
    }
    tokio::time::sleep(ms(1800)).await;
    assert!(
        s.peek(&token).await.unwrap().is_none(),
        "idle past the timeout"
    );
}

async fn session_created_with_data_has_it_at_version_zero(s: &Sessions) {
    let mut data = SessionData::new();
    data.insert("cart", &vec![1u32, 2]).unwrap();
    data.insert_raw("raw", b"\x00\xffbytes").unwrap();
    let (token, created) = s
        .create(NewSession::anonymous().data(data.clone()))
        .await
        .unwrap();
    assert_eq!(created.version(), 0);
    let got = s.get(&token).await.unwrap().unwrap();
    assert_eq!(got.data(), &data);
    assert_eq!(got.get::<Vec<u32>>("cart").unwrap(), Some(vec![1, 2]));
    assert_eq!(got.data().get_raw("raw"), Some(&b"\x00\xffbytes"[..]));
}

async fn typed_data_put_get_remove_and_versions(s: &Sessions) {
    let (token, _) = s.create(NewSession::anonymous()).await.unwrap();
    assert_eq!(s.put(&token, "a", &"x").await.unwrap(), 1);
    assert_eq!(s.put(&token, "b", &7u64).await.unwrap(), 2);
    assert_eq!(s.put(&token, "a", &"y").await.unwrap(), 3);
    let got = s.get(&token).await.unwrap().unwrap();
    assert_eq!(got.get::<String>("a").unwrap().as_deref(), Some("y"));
    assert_eq!(got.get::<u64>("b").unwrap(), Some(7));
    assert_eq!(got.version(), 3);
    assert_eq!(s.remove(&token, "a").await.unwrap(), 4);
    let got = s.get(&token).await.unwrap().unwrap();
    assert_eq!(got.get::<String>("a").unwrap(), None);
    assert_eq!(got.data().len(), 1);
    // A wrong type is a codec error, not a panic.
    assert!(matches!(
        got.get::<Vec<String>>("b"),
        Err(Error::Codec { .. })
    ));
}

async fn compare_and_swap_save_refuses_a_stale_version(s: &Sessions) {
    let (token, _) = s.create(NewSession::anonymous()).await.unwrap();
    let read = s.get(&token).await.unwrap().unwrap();
    s.put(&token, "other", &1).await.unwrap();
    let mut mine = read.data().clone();
    mine.insert("mine", &2).unwrap();
    match s.save(&token, read.version(), &mine).await {
        Err(Error::VersionConflict { expected, actual }) => {
            assert_eq!((expected, actual), (0, 1));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let now = s.get(&token).await.unwrap().unwrap();
    assert_eq!(now.get::<i32>("other").unwrap(), Some(1));
    assert_eq!(now.get::<i32>("mine").unwrap(), None);
    let v = s.save(&token, now.version(), &mine).await.unwrap();
    assert_eq!(v, 2);
    let after = s.get(&token).await.unwrap().unwrap();
    assert_eq!(after.data(), &mine, "a save replaces the whole map");
}

async fn concurrent_updates_never_lose_each_other(s: &Sessions) {
    let (token, _) = s.create(NewSession::anonymous()).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (s, token) = (s.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                s.update(&token, |d| {
                    let n: u64 = d.get("n")?.unwrap_or(0);
                    d.insert("n", &(n + 1))
                })
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got = s.get(&token).await.unwrap().unwrap();
    assert_eq!(got.get::<u64>("n").unwrap(), Some(100));
}

async fn update_that_fails_saves_nothing(s: &Sessions) {
    let (token, _) = s.create(NewSession::anonymous()).await.unwrap();
    s.put(&token, "k", &1).await.unwrap();
    let r: sessiondb::Result<()> = s
        .update(&token, |d| {
            d.insert("k", &2)?;
            Err(Error::InvalidOption {
                name: "test",
                reason: "refused".into(),
            })
        })
        .await;
    assert!(r.is_err());
    let got = s.get(&token).await.unwrap().unwrap();
    assert_eq!(got.get::<i32>("k").unwrap(), Some(1));
    assert_eq!(got.version(), 1);
}

async fn ending_is_final_no_write_or_touch_resurrects(s: &Sessions) {
    let (token, _) = s.create(NewSession::for_user("alice")).await.unwrap();
    assert!(s.end(&token).await.unwrap());
    assert!(!s.end(&token).await.unwrap(), "a second end finds nothing");
    assert!(matches!(s.put(&token, "k", &1).await, Err(Error::Ended)));
    assert!(matches!(s.remove(&token, "k").await, Err(Error::Ended)));
    assert!(matches!(s.touch(&token).await, Err(Error::Ended)));
    assert!(matches!(
        s.extend(&token, ms(1000)).await,
        Err(Error::Ended)
    ));
    assert!(matches!(
        s.set_label(&token, Some("x")).await,
        Err(Error::Ended)
    ));
    assert!(matches!(
        s.bind_user(&token, "bob").await,
        Err(Error::Ended)
    ));
    assert!(matches!(s.rotate(&token).await, Err(Error::Ended)));
    assert!(matches!(s.login(&token, "bob").await, Err(Error::Ended)));
    assert!(matches!(s.unbind_user(&token).await, Err(Error::Ended)));
    assert!(s.get(&token).await.unwrap().is_none());
    assert!(s.sessions_of("alice").await.unwrap().is_empty());
    assert!(s.sessions_of("bob").await.unwrap().is_empty());
    assert_eq!(s.len().await.unwrap(), 0);
}

async fn a_late_save_after_an_end_never_resurrects(s: &Sessions) {
    let (token, _) = s.create(NewSession::for_user("alice")).await.unwrap();
    let read = s.get(&token).await.unwrap().unwrap();
    assert_eq!(s.revoke_user("alice").await.unwrap(), 1);
    let mut data = read.data().clone();
    data.insert("late", &true).unwrap();
    assert!(matches!(
        s.save(&token, read.version(), &data).await,
        Err(Error::Ended)
    ));
    assert!(s.get(&token).await.unwrap().is_none());
    assert!(s.sessions_of("alice").await.unwrap().is_empty());
}

async fn rotation_keeps_id_data_and_user_and_old_token_lives_out_its_grace(s: &Sessions) {
    let (old, created) = s.create(NewSession::for_user("alice")).await.unwrap();
    s.put(&old, "k", &"v").await.unwrap();
    let new = s.rotate(&old).await.unwrap();
    assert_ne!(new, old);
    let got = s.get(&new).await.unwrap().unwrap();
    assert_eq!(got.id(), created.id());
    assert_eq!(got.user().map(|u| u.as_str()), Some("alice"));
    assert_eq!(got.get::<String>("k").unwrap().as_deref(), Some("v"));
    // The old token still reads and writes the session during its grace...
    assert_eq!(s.get(&old).await.unwrap().unwrap().id(), created.id());
    s.put(&old, "k2", &1).await.unwrap();
    // ...but cannot mint a new token.
    assert!(matches!(s.rotate(&old).await, Err(Error::TokenRetired)));
    assert_eq!(s.sessions_of("alice").await.unwrap().len(), 1);
    tokio::time::sleep(ms(1100)).await;
    assert!(s.get(&old).await.unwrap().is_none(), "grace is over");
    let got = s.get(&new).await.unwrap().unwrap();
    assert_eq!(got.get::<i32>("k2").unwrap(), Some(1));
}

async fn rotation_with_zero_grace_retires_the_old_token_at_once(s: &Sessions) {
    let (old, _) = s.create(NewSession::anonymous()).await.unwrap();
    let new = s.rotate(&old).await.unwrap();
    assert!(s.get(&old).await.unwrap().is_none());
    assert!(s.get(&new).await.unwrap().is_some());
    // rotate_to: a chosen token, no grace; a taken one is refused.
    let chosen = Token::generate().unwrap();
    s.rotate_to(&new, &chosen).await.unwrap();
    assert!(s.get(&new).await.unwrap().is_none());
    assert!(s.get(&chosen).await.unwrap().is_some());
    let (other, _) = s.create(NewSession::anonymous()).await.unwrap();
    assert!(matches!(
        s.rotate_to(&chosen, &other).await,
        Err(Error::Exists { .. })
    ));
    assert!(matches!(
        s.rotate_to(&chosen, &chosen).await,
        Err(Error::Exists { .. })
    ));
}

async fn ending_through_an_old_token_in_grace_ends_the_session(s: &Sessions) {
    let (old, _) = s.create(NewSession::anonymous()).await.unwrap();
    let new = s.rotate(&old).await.unwrap();
    assert!(s.end(&old).await.unwrap());
    assert!(s.get(&new).await.unwrap().is_none());
    assert!(s.get(&old).await.unwrap().is_none());
}

async fn login_rotates_and_binds(s: &Sessions) {
    let (visitor, created) = s.create(NewSession::anonymous()).await.unwrap();
    assert!(created.authenticated_at().is_none());
    s.put(&visitor, "cart", &3).await.unwrap();
    let token = s.login(&visitor, "alice").await.unwrap();
    assert_ne!(token, visitor);
    let got = s.get(&token).await.unwrap().unwrap();
    assert_eq!(got.id(), created.id());
    assert_eq!(got.user().map(|u| u.as_str()), Some("alice"));
    assert!(got.authenticated_at().is_some());
    assert_eq!(got.get::<i32>("cart").unwrap(), Some(3));
    assert_eq!(
        s.user_of(&token).await.unwrap().map(|u| u.to_string()),
        Some("alice".into())
    );
    let mine = s.sessions_of("alice").await.unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].id(), created.id());
}

async fn binding_another_user_moves_the_session_between_user_indexes(s: &Sessions) {
    let (token, _) = s.create(NewSession::for_user("alice")).await.unwrap();
    s.bind_user(&token, "bob").await.unwrap();
    assert!(s.sessions_of("alice").await.unwrap().is_empty());
    assert_eq!(s.sessions_of("bob").await.unwrap().len(), 1);
    assert_eq!(s.revoke_user("alice").await.unwrap(), 0);
    assert!(s.get(&token).await.unwrap().is_some());
}

async fn unbinding_keeps_the_session_and_leaves_the_users_index(s: &Sessions) {
    let (token, _) = s.create(NewSession::for_user("alice")).await.unwrap();
    s.put(&token, "k", &1).await.unwrap();
    let was = s.unbind_user(&token).await.unwrap();
    assert_eq!(was.map(|u| u.to_string()), Some("alice".into()));
    assert_eq!(s.unbind_user(&token).await.unwrap(), None);
    let got = s.get(&token).await.unwrap().unwrap();
    assert!(got.user().is_none());
    assert!(got.authenticated_at().is_none());
    assert_eq!(got.get::<i32>("k").unwrap(), Some(1));
    assert!(s.sessions_of("alice").await.unwrap().is_empty());
    assert_eq!(s.revoke_user("alice").await.unwrap(), 0);
}

async fn sessions_of_user_lists_devices_oldest_first(s: &Sessions) {
    let mut ids = Vec::new();
    for label in ["phone", "laptop", "tablet"] {
        let (_, c) = s
            .create(NewSession::for_user("alice").label(label))
            .await
            .unwrap();
        ids.push(c.id());
        tokio::time::sleep(ms(5)).await;
    }
    s.create(NewSession::for_user("bob")).await.unwrap();
    let mine = s.sessions_of("alice").await.unwrap();
    let got: Vec<_> = mine.iter().map(|x| x.id()).collect();
    assert_eq!(got, ids);
    let labels: Vec<_> = mine.iter().map(|x| x.label().unwrap()).collect();
    assert_eq!(labels, ["phone", "laptop", "tablet"]);
    assert!(s.sessions_of("nobody").await.unwrap().is_empty());
}

async fn revoke_user_ends_all_and_only_that_users_sessions(s: &Sessions) {
    let mut alice = Vec::new();
    for _ in 0..3 {
        alice.push(s.create(NewSession::for_user("alice")).await.unwrap().0);
    }
    let (bob, _) = s.create(NewSession::for_user("bob")).await.unwrap();
    let (anon, _) = s.create(NewSession::anonymous()).await.unwrap();
    assert_eq!(s.revoke_user("alice").await.unwrap(), 3);
    for t in &alice {
        assert!(s.get(t).await.unwrap().is_none());
    }
    assert!(s.get(&bob).await.unwrap().is_some());
    assert!(s.get(&anon).await.unwrap().is_some());
    assert_eq!(s.revoke_user("alice").await.unwrap(), 0);
    assert_eq!(s.len().await.unwrap(), 2);
}

async fn end_by_public_id_signs_out_one_device(s: &Sessions) {
    let (a, sa) = s.create(NewSession::for_user("alice")).await.unwrap();
    let (b, _) = s.create(NewSession::for_user("alice")).await.unwrap();
    assert_eq!(s.get_by_id(sa.id()).await.unwrap().unwrap().id(), sa.id());
    assert!(s.end_by_id(sa.id()).await.unwrap());
    assert!(!s.end_by_id(sa.id()).await.unwrap());
    assert!(s.get_by_id(sa.id()).await.unwrap().is_none());
    assert!(s.get(&a).await.unwrap().is_none());
    assert!(s.get(&b).await.unwrap().is_some());
    assert_eq!(s.sessions_of("alice").await.unwrap().len(), 1);
}

async fn per_user_limit_refuses_when_configured(s: &Sessions) {
    s.create(NewSession::for_user("alice")).await.unwrap();
    s.create(NewSession::for_user("alice")).await.unwrap();
    match s.create(NewSession::for_user("alice")).await {
        Err(Error::UserSessionLimit { user, max }) => {
            assert_eq!((user.as_str(), max), ("alice", 2));
        }
        other => panic!("expected the limit, got {other:?}"),
    }
    // A login that would go over is refused too, and changes nothing.
    let (visitor, _) = s.create(NewSession::anonymous()).await.unwrap();
    assert!(matches!(
        s.login(&visitor, "alice").await,
        Err(Error::UserSessionLimit { .. })
    ));
    let v = s
        .get(&visitor)
        .await
        .unwrap()
        .expect("the visitor keeps its session");
    assert!(v.user().is_none());
    assert_eq!(s.sessions_of("alice").await.unwrap().len(), 2);
}

async fn per_user_limit_ends_the_oldest_when_configured(s: &Sessions) {
    let (first, _) = s.create(NewSession::for_user("alice")).await.unwrap();
    tokio::time::sleep(ms(5)).await;
    let (second, _) = s.create(NewSession::for_user("alice")).await.unwrap();
    tokio::time::sleep(ms(5)).await;
    let (visitor, _) = s.create(NewSession::anonymous()).await.unwrap();
    let third = s.login(&visitor, "alice").await.unwrap();
    assert!(
        s.get(&first).await.unwrap().is_none(),
        "the oldest made room"
    );
    assert!(s.get(&second).await.unwrap().is_some());
    assert!(s.get(&third).await.unwrap().is_some());
    assert_eq!(s.sessions_of("alice").await.unwrap().len(), 2);
}

async fn events_report_lifecycle_by_public_id(s: &Sessions) {
    let rx = s.subscribe().await.unwrap();
    let (visitor, c) = s.create(NewSession::anonymous()).await.unwrap();
    let id = c.id();
    assert_eq!(
        next(&rx),
        Event::Created {
            session: id,
            user: None
        }
    );
    let token = s.rotate(&visitor).await.unwrap();
    assert_eq!(next(&rx), Event::Rotated { session: id });
    s.bind_user(&token, "alice").await.unwrap();
    match next(&rx) {
        Event::UserBound { session, user } => {
            assert_eq!((session, user.as_str()), (id, "alice"));
        }
        other => panic!("expected UserBound, got {other:?}"),
    }
    assert_eq!(s.revoke_user("alice").await.unwrap(), 1);
    match next(&rx) {
        Event::Ended {
            session,
            user,
            reason,
        } => {
            assert_eq!(session, id);
            assert_eq!(user.map(|u| u.to_string()), Some("alice".into()));
            assert_eq!(reason, EndReason::Revoked);
        }
        other => panic!("expected Ended, got {other:?}"),
    }
    match next(&rx) {
        Event::UserRevoked { user, sessions } => {
            assert_eq!((user.as_str(), sessions), ("alice", vec![id]));
        }
        other => panic!("expected UserRevoked, got {other:?}"),
    }
    let (t2, c2) = s.create(NewSession::anonymous()).await.unwrap();
    next(&rx);
    s.end(&t2).await.unwrap();
    assert_eq!(
        next(&rx),
        Event::Ended {
            session: c2.id(),
            user: None,
            reason: EndReason::Ended
        }
    );
}

async fn reaper_reports_expiry_with_the_user(s: &Sessions) {
    let rx = s.subscribe().await.unwrap();
    let (_, c) = s
        .create(NewSession::for_user("alice").lifetime(ms(300)))
        .await
        .unwrap();
    assert!(matches!(next(&rx), Event::Created { .. }));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the expiry event")
        {
            Event::Ended {
                session,
                user,
                reason,
            } => {
                assert_eq!(session, c.id());
                assert_eq!(user.map(|u| u.to_string()), Some("alice".into()));
                assert_eq!(reason, EndReason::Expired);
                break;
            }
            other => assert!(std::time::Instant::now() < deadline, "{other:?}"),
        }
    }
    assert_eq!(s.len().await.unwrap(), 0);
    assert!(s.sessions_of("alice").await.unwrap().is_empty());
}

async fn bad_input_is_refused_with_typed_errors_and_changes_nothing(s: &Sessions) {
    assert!(matches!(
        s.create(NewSession::for_user("")).await,
        Err(Error::InvalidUserId { .. })
    ));
    assert!(matches!(
        s.create(NewSession::for_user("a\nb")).await,
        Err(Error::InvalidUserId { .. })
    ));
    assert!(matches!(
        s.create(NewSession::for_user("u".repeat(257))).await,
        Err(Error::TooLarge {
            what: "user id",
            ..
        })
    ));
    assert!(matches!(
        s.create(NewSession::anonymous().label("l".repeat(257)))
            .await,
        Err(Error::TooLarge { what: "label", .. })
    ));
    assert!(matches!(
        s.create(NewSession::anonymous().lifetime(Duration::ZERO))
            .await,
        Err(Error::InvalidOption { .. })
    ));
    assert_eq!(s.len().await.unwrap(), 0, "nothing was created");
    let (token, _) = s.create(NewSession::anonymous()).await.unwrap();
    assert!(matches!(
        s.put_raw(&token, &"k".repeat(257), b"v").await,
        Err(Error::TooLarge { what: "key", .. })
    ));
    assert!(matches!(
        s.put_raw(&token, "k", &vec![0u8; 64 * 1024 + 1]).await,
        Err(Error::TooLarge { what: "value", .. })
    ));
    // Five 60 KiB values fit one by one but not together (256 KiB per session).
    for i in 0..4 {
        s.put_raw(&token, &format!("k{i}"), &vec![1u8; 60 * 1024])
            .await
            .unwrap();
    }
    assert!(matches!(
        s.put_raw(&token, "k4", &vec![1u8; 60 * 1024]).await,
        Err(Error::TooLarge {
            what: "session data",
            ..
        })
    ));
    let got = s.get(&token).await.unwrap().unwrap();
    assert_eq!(got.data().len(), 4);
    assert_eq!(got.version(), 4);
    // Replacing a value counts its old size out.
    s.put_raw(&token, "k0", &vec![2u8; 60 * 1024])
        .await
        .unwrap();
    assert!(matches!(
        s.sessions_of("").await,
        Err(Error::InvalidUserId { .. })
    ));
    assert!(matches!(
        s.revoke_user("").await,
        Err(Error::InvalidUserId { .. })
    ));
    assert!(matches!(
        s.bind_user(&token, "").await,
        Err(Error::InvalidUserId { .. })
    ));
}

async fn clear_ends_everything(s: &Sessions) {
    let rx = s.subscribe().await.unwrap();
    let mut tokens = Vec::new();
    for i in 0..30 {
        let new = if i % 2 == 0 {
            NewSession::for_user(format!("user{}", i % 5))
        } else {
            NewSession::anonymous()
        };
        tokens.push(s.create(new).await.unwrap().0);
    }
    assert_eq!(s.clear().await.unwrap(), 30);
    for t in &tokens {
        assert!(s.get(t).await.unwrap().is_none());
    }
    assert_eq!(s.len().await.unwrap(), 0);
    assert!(s.sessions_of("user0").await.unwrap().is_empty());
    let cleared = std::iter::from_fn(|| rx.recv_timeout(Duration::from_secs(5)).ok())
        .find(|e| matches!(e, Event::Cleared { .. }));
    assert_eq!(cleared, Some(Event::Cleared { sessions: 30 }));
    // The store works after a clear.
    let (t, _) = s.create(NewSession::for_user("user0")).await.unwrap();
    assert!(s.get(&t).await.unwrap().is_some());
}

async fn create_with_token_addresses_the_session_by_that_token_and_refuses_a_taken_one(
    s: &Sessions,
) {
    let token = Token::from_bytes([7u8; 24]);
    let created = s
        .create_with_token(&token, NewSession::for_user("alice"))
        .await
        .unwrap();
    assert_eq!(s.get(&token).await.unwrap().unwrap().id(), created.id());
    assert!(matches!(
        s.create_with_token(&token, NewSession::anonymous()).await,
        Err(Error::Exists { what: "token" })
    ));
    // A token in its grace period is taken too.
    let new = s.rotate(&token).await.unwrap();
    assert!(matches!(
        s.create_with_token(&token, NewSession::anonymous()).await,
        Err(Error::Exists { .. })
    ));
    assert!(s.get(&new).await.unwrap().is_some());
}

async fn export_then_import_answers_to_the_same_tokens(s: &Sessions) {
    let mut tokens = Vec::new();
    for i in 0..20u32 {
        let (t, _) = s
            .create(NewSession::for_user(format!("u{}", i % 3)).label(format!("dev{i}")))
            .await
            .unwrap();
        s.put(&t, "i", &i).await.unwrap();
        tokens.push(t);
    }
    let mut records = Vec::new();
    let n = s
        .export(|r| {
            records.push(r);
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!((n, records.len()), (20, 20));
    // Into a fresh embedded store: the same cookies keep working.
    let other = Sessions::open("memory:", Options::default()).await.unwrap();
    for r in records.clone() {
        assert!(other.import(r).await.unwrap());
    }
    for (i, t) in tokens.iter().enumerate() {
        let got = other.get(t).await.unwrap().expect("imported");
        assert_eq!(got.get::<u32>("i").unwrap(), Some(i as u32));
        assert_eq!(got.label(), Some(format!("dev{i}").as_str()));
    }
    assert_eq!(other.sessions_of("u0").await.unwrap().len(), 7);
    // Importing into the store they came from: every one is already there.
    assert!(matches!(
        s.import(records[0].clone()).await,
        Err(Error::Exists { .. })
    ));
}

/// Issue 18, defect 9: an import took `version: u64::MAX`; the next write wrapped it to
/// 0 on the embedded store (and on Redis, whose Lua numbers are doubles, a version past
/// 2^53 was rounded, and past 2^63 stored as garbage).
async fn a_version_never_wraps_an_import_must_leave_room_and_the_last_change_is_refused(
    s: &Sessions,
) {
    let (t, _) = s.create(NewSession::for_user("alice")).await.unwrap();
    let mut records = Vec::new();
    s.export(|r| {
        records.push(r);
        Ok(())
    })
    .await
    .unwrap();
    let rec = records.pop().unwrap();
    assert!(s.end(&t).await.unwrap());
    let at = |version| SessionRecord {
        version,
        ..rec.clone()
    };
    for v in [u64::MAX, 1 << 63, 1 << 53, Session::MAX_VERSION] {
        match s.import(at(v)).await {
            Err(Error::InvalidOption {
                name: "SessionRecord::version",
                ..
            }) => {}
            other => panic!("version {v}: {other:?}"),
        }
    }
    assert!(s.is_empty().await.unwrap());
    assert!(s.import(at(Session::MAX_VERSION - 1)).await.unwrap());
    assert_eq!(
        s.get(&t).await.unwrap().unwrap().version(),
        Session::MAX_VERSION - 1
    );
    assert_eq!(s.put(&t, "k", &1u8).await.unwrap(), Session::MAX_VERSION);
    let exhausted = |r: Result<(), Error>| match r {
        Err(Error::VersionExhausted { version }) => assert_eq!(version, Session::MAX_VERSION),
        other => panic!("{other:?}"),
    };
    exhausted(s.put(&t, "k", &2u8).await.map(drop));
    exhausted(s.remove(&t, "k").await.map(drop));
    exhausted(
        s.save(&t, Session::MAX_VERSION, &SessionData::new())
            .await
            .map(drop),
    );
    exhausted(s.update(&t, |d| d.insert("k", &3u8)).await);
    exhausted(s.bind_user(&t, "bob").await);
    exhausted(s.login(&t, "bob").await.map(drop));
    exhausted(s.unbind_user(&t).await.map(drop));
    assert!(matches!(
        s.save(&t, 0, &SessionData::new()).await,
        Err(Error::VersionConflict { expected: 0, .. })
    ));
    let got = s.get(&t).await.unwrap().expect("still live, same token");
    assert_eq!(got.version(), Session::MAX_VERSION);
    assert_eq!(got.get::<u8>("k").unwrap(), Some(1));
    assert_eq!(got.user().map(|u| u.as_str()), Some("alice"));
    assert_eq!(s.sessions_of("alice").await.unwrap().len(), 1);
    assert!(s.sessions_of("bob").await.unwrap().is_empty());
    assert_eq!(s.remove(&t, "absent").await.unwrap(), Session::MAX_VERSION);
    assert!(s.end(&t).await.unwrap());
}

async fn set_expiry_moves_the_deadline_both_ways_and_a_past_one_ends_the_session_as_expired(
    s: &Sessions,
) {
    let (token, _) = s
        .create(NewSession::anonymous().idle_timeout(Duration::ZERO))
        .await
        .unwrap();
    let later = Timestamp(now().as_millis() + 3_600_000);
    assert_eq!(s.set_expiry(&token, later).await.unwrap(), later);
    assert_eq!(
        s.get(&token).await.unwrap().unwrap().absolute_deadline(),
        later
    );
    let sooner = Timestamp(now().as_millis() + 60_000);
    assert_eq!(s.set_expiry(&token, sooner).await.unwrap(), sooner);
    let rx = s.subscribe().await.unwrap();
    s.set_expiry(&token, Timestamp(now().as_millis() - 1))
        .await
        .unwrap();
    assert!(s.get(&token).await.unwrap().is_none());
    match next(&rx) {
        Event::Ended { reason, .. } => assert_eq!(reason, EndReason::Expired),
        other => panic!("expected Ended, got {other:?}"),
    }
}

async fn extend_never_shortens_and_touch_refuses_an_ended_session(s: &Sessions) {
    let (token, c) = s
        .create(NewSession::anonymous().lifetime(Duration::from_secs(3600)))
        .await
        .unwrap();
    let same = s.extend(&token, Duration::from_secs(60)).await.unwrap();
    assert_eq!(same, c.expires_at().min(same));
    let got = s.get(&token).await.unwrap().unwrap();
    assert_eq!(
        got.absolute_deadline(),
        c.absolute_deadline(),
        "not shortened"
    );
    s.extend(&token, Duration::from_secs(7200)).await.unwrap();
    let got = s.get(&token).await.unwrap().unwrap();
    assert!(got.absolute_deadline() > c.absolute_deadline());
    s.touch(&token).await.unwrap();
    s.end(&token).await.unwrap();
    assert!(matches!(s.touch(&token).await, Err(Error::Ended)));
}

async fn revoking_a_user_with_many_sessions_some_rotated_ends_every_one(s: &Sessions) {
    let mut tokens = Vec::new();
    for i in 0..300 {
        let (t, _) = s.create(NewSession::for_user("many")).await.unwrap();
        let t = if i % 3 == 0 {
            s.rotate(&t).await.unwrap()
        } else {
            t
        };
        tokens.push(t);
    }
    assert_eq!(s.sessions_of("many").await.unwrap().len(), 300);
    assert_eq!(s.revoke_user("many").await.unwrap(), 300);
    for t in &tokens {
        assert!(s.get(t).await.unwrap().is_none());
    }
    assert_eq!(s.len().await.unwrap(), 0);
}

async fn revoke_racing_creates_for_the_same_user_leaves_no_session_behind_or_lost(s: &Sessions) {
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for _ in 0..40 {
                mine.push(s.create(NewSession::for_user("racer")).await.unwrap().0);
            }
            mine
        }));
    }
    let mut revoked = 0;
    for _ in 0..5 {
        tokio::time::sleep(ms(2)).await;
        revoked += s.revoke_user("racer").await.unwrap();
    }
    let (found, live) = live_and_listed(s, "racer", tasks).await;
    assert_eq!(found, live.len(), "the index lists only live sessions");
    assert_eq!(
        found + revoked,
        160,
        "every session is either live or revoked"
    );
}

/// The public ids of `user`'s live sessions, oldest first.
async fn listed_ids(s: &Sessions, user: &str) -> Vec<SessionId> {
    let all = s.sessions_of(user).await.unwrap();
    all.iter().map(|x| x.id()).collect()
}

/// Waits for the racing tasks; returns how many of the sessions they created are live,
/// each checked to be listed in `user`'s index, and the ids the index lists.
async fn live_and_listed(
    s: &Sessions,
    user: &str,
    tasks: Vec<tokio::task::JoinHandle<Vec<Token>>>,
) -> (usize, HashSet<SessionId>) {
    let mut created = Vec::new();
    for t in tasks {
        created.extend(t.await.unwrap());
    }
    let live: HashSet<_> = s
        .sessions_of(user)
        .await
        .unwrap()
        .iter()
        .map(|x| x.id())
        .collect();
    let mut found = 0;
    for t in &created {
        if let Some(x) = s.get(t).await.unwrap() {
            assert!(
                live.contains(&x.id()),
                "a live session missing from the user's index"
            );
            found += 1;
        }
    }
    (found, live)
}

async fn revoke_others_ends_every_other_session_of_the_user_and_keeps_this_one(s: &Sessions) {
    let (this, kept) = s.create(NewSession::for_user("alice")).await.unwrap();
    let (b, sb) = s.create(NewSession::for_user("alice")).await.unwrap();
    let (c, sc) = s.create(NewSession::for_user("alice")).await.unwrap();
    let c2 = s.rotate(&c).await.unwrap();
    let (bob, _) = s.create(NewSession::for_user("bob")).await.unwrap();
    let (anon, _) = s.create(NewSession::anonymous()).await.unwrap();
    let rx = s.subscribe().await.unwrap();
    assert_eq!(s.revoke_others(&this).await.unwrap(), 2);
    let mut ended = HashSet::new();
    for _ in 0..2 {
        match next(&rx) {
            Event::Ended {
                session,
                user,
                reason,
            } => {
                assert_eq!(reason, EndReason::RevokedByOtherSession);
                assert_eq!(user.map(|u| u.to_string()), Some("alice".into()));
                ended.insert(session);
            }
            other => panic!("expected Ended, got {other:?}"),
        }
    }
    assert_eq!(ended, HashSet::from([sb.id(), sc.id()]));
    for t in [&b, &c, &c2] {
        assert!(s.get(t).await.unwrap().is_none(), "an other session ended");
    }
    let listed = listed_ids(s, "alice").await;
    assert_eq!(listed, vec![kept.id()], "this one stays, listed");
    assert_eq!(s.get(&this).await.unwrap().unwrap().id(), kept.id());
    assert!(
        s.get(&bob).await.unwrap().is_some(),
        "another user's is untouched"
    );
    assert!(s.get(&anon).await.unwrap().is_some());
    assert_eq!(s.revoke_others(&this).await.unwrap(), 0, "none left");
    assert_eq!(
        s.revoke_others(&anon).await.unwrap(),
        0,
        "anonymous: no others"
    );
    assert!(matches!(
        s.revoke_others(&b).await,
        Err(sessiondb::Error::Ended)
    ));
    assert_eq!(s.len().await.unwrap(), 3);
}

async fn revoke_others_racing_creates_and_logins_leaves_this_one_and_nothing_half_revoked(
    s: &Sessions,
) {
    let (keeper, kept) = s.create(NewSession::for_user("racer")).await.unwrap();
    let mut tasks = Vec::new();
    for k in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..40 {
                let t = if (i + k) % 2 == 0 {
                    s.create(NewSession::for_user("racer")).await.unwrap().0
                } else {
                    let (t, _) = s.create(NewSession::anonymous()).await.unwrap();
                    s.login(&t, "racer").await.unwrap()
                };
                mine.push(t);
            }
            mine
        }));
    }
    let mut revoked = 0;
    for _ in 0..5 {
        tokio::time::sleep(ms(2)).await;
        revoked += s.revoke_others(&keeper).await.unwrap();
    }
    let (found, live) = live_and_listed(s, "racer", tasks).await;
    assert!(live.contains(&kept.id()), "the keeper is never revoked");
    assert_eq!(found + 1, live.len(), "the index lists only live sessions");
    assert_eq!(
        found + revoked,
        160,
        "every session is either live or revoked"
    );
    // And a last call leaves the keeper alone.
    assert_eq!(s.revoke_others(&keeper).await.unwrap(), found);
    assert_eq!(s.sessions_of("racer").await.unwrap().len(), 1);
}

async fn revoke_others_by_id_keeps_that_session_and_ends_the_users_others(s: &Sessions) {
    let (a, _) = s.create(NewSession::for_user("alice")).await.unwrap();
    let (b, kept) = s.create(NewSession::for_user("alice")).await.unwrap();
    let b2 = s.rotate(&b).await.unwrap();
    let (c, _) = s.create(NewSession::for_user("alice")).await.unwrap();
    let (bob, _) = s.create(NewSession::for_user("bob")).await.unwrap();
    let (anon, visitor) = s.create(NewSession::anonymous()).await.unwrap();
    // By its public id, stable across the rotation.
    assert_eq!(s.revoke_others_by_id(kept.id()).await.unwrap(), 2);
    assert!(s.get(&a).await.unwrap().is_none());
    assert!(s.get(&c).await.unwrap().is_none());
    assert_eq!(s.get(&b2).await.unwrap().unwrap().id(), kept.id());
    assert!(s.get(&bob).await.unwrap().is_some());
    assert_eq!(s.revoke_others_by_id(kept.id()).await.unwrap(), 0);
    assert_eq!(s.revoke_others_by_id(visitor.id()).await.unwrap(), 0);
    assert!(s.get(&anon).await.unwrap().is_some());
    let (gone, ended) = s.create(NewSession::for_user("alice")).await.unwrap();
    s.end(&gone).await.unwrap();
    let unknown = SessionId::parse("0b6c1f3e-9a58-4c1e-8d53-1f0f8a3b2c11").unwrap();
    for id in [ended.id(), unknown] {
        assert!(matches!(s.revoke_others_by_id(id).await, Err(Error::Ended)));
    }
    assert_eq!(s.sessions_of("alice").await.unwrap().len(), 1);
}

/// Sleeps past the current millisecond, so what happens next has a later time.
async fn next_ms() {
    tokio::time::sleep(ms(3)).await;
}

async fn revoke_user_before_ends_the_sessions_authenticated_earlier_and_keeps_the_later_ones(
    s: &Sessions,
) {
    let (a, sa) = s.create(NewSession::for_user("alice")).await.unwrap();
    let (b, sb) = s.create(NewSession::for_user("alice")).await.unwrap();
    let b2 = s.rotate(&b).await.unwrap();
    let (bob, _) = s.create(NewSession::for_user("bob")).await.unwrap();
    let (anon, _) = s.create(NewSession::anonymous()).await.unwrap();
    next_ms().await;
    // The password is changed on this device: it logs in again, then the rest go.
    let (here, _) = s.create(NewSession::anonymous()).await.unwrap();
    let here = s.login(&here, "alice").await.unwrap();
    let kept = s.get(&here).await.unwrap().unwrap();
    let at = kept.authenticated_at().unwrap();
    assert!(at > sa.authenticated_at().unwrap());
    let rx = s.subscribe().await.unwrap();
    assert_eq!(s.revoke_user_before("alice", at).await.unwrap(), 2);
    let mut ended = HashSet::new();
    let mut reported = None;
    for _ in 0..3 {
        match next(&rx) {
            Event::Ended {
                session,
                user,
                reason,
            } => {
                assert_eq!(reason, EndReason::Revoked);
                assert_eq!(user.map(|u| u.to_string()), Some("alice".into()));
                ended.insert(session);
            }
            Event::UserRevoked { user, sessions } => {
                assert_eq!(user.as_str(), "alice");
                reported = Some(sessions.into_iter().collect::<HashSet<_>>());
            }
            other => panic!("expected Ended or UserRevoked, got {other:?}"),
        }
    }
    assert_eq!(ended, HashSet::from([sa.id(), sb.id()]));
    assert_eq!(reported, Some(ended));
    for t in [&a, &b, &b2] {
        assert!(s.get(t).await.unwrap().is_none(), "an older session ended");
    }
    let listed = listed_ids(s, "alice").await;
    assert_eq!(listed, vec![kept.id()]);
    assert!(s.get(&bob).await.unwrap().is_some(), "another user's stays");
    assert!(s.get(&anon).await.unwrap().is_some());
    // Again with the same time: nothing more; a time before it changes nothing.
    assert_eq!(s.revoke_user_before("alice", at).await.unwrap(), 0);
    assert_eq!(
        s.revoke_user_before("alice", Timestamp(0)).await.unwrap(),
        0
    );
    assert_eq!(s.revoke_user_before("nobody", at).await.unwrap(), 0);
    assert!(s.get(&here).await.unwrap().is_some());
    assert!(matches!(
        s.revoke_user_before("", at).await,
        Err(Error::InvalidUserId { .. })
    ));
    assert_eq!(s.len().await.unwrap(), 3);
}

async fn revoke_user_before_in_the_future_counts_as_now_and_holds_no_login_back(s: &Sessions) {
    let (a, _) = s.create(NewSession::for_user("alice")).await.unwrap();
    next_ms().await;
    let tomorrow = Timestamp(now().0 + 86_400_000);
    assert_eq!(s.revoke_user_before("alice", tomorrow).await.unwrap(), 1);
    assert!(s.get(&a).await.unwrap().is_none());
    next_ms().await;
    // Signing in again works at once, and stays.
    let (b, _) = s.create(NewSession::for_user("alice")).await.unwrap();
    let (c, _) = s.create(NewSession::anonymous()).await.unwrap();
    let c = s.login(&c, "alice").await.unwrap();
    assert!(s.get(&b).await.unwrap().is_some());
    assert!(s.get(&c).await.unwrap().is_some());
    assert_eq!(s.sessions_of("alice").await.unwrap().len(), 2);
    // Their export imports back once they have ended: they are later than the time.
    let mut records = Vec::new();
    s.export(|r| {
        records.push(r);
        Ok(())
    })
    .await
    .unwrap();
    s.clear().await.unwrap();
    for r in records {
        assert!(s.import(r).await.unwrap(), "signed in after the revocation");
    }
    assert_eq!(s.sessions_of("alice").await.unwrap().len(), 2);
}

async fn not_before_times_lists_each_users_latest_time(s: &Sessions) {
    assert!(s.not_before_times().await.unwrap().is_empty());
    let t = now().0 - 60_000;
    s.revoke_user_before("bob", Timestamp(t)).await.unwrap();
    s.revoke_user_before("alice", Timestamp(t + 2))
        .await
        .unwrap();
    s.revoke_user_before("alice", Timestamp(t + 1))
        .await
        .unwrap();
    let got: Vec<(String, Timestamp)> = s
        .not_before_times()
        .await
        .unwrap()
        .into_iter()
        .map(|(u, at)| (u.to_string(), at))
        .collect();
    assert_eq!(
        got,
        vec![
            ("alice".to_owned(), Timestamp(t + 2)),
            ("bob".to_owned(), Timestamp(t))
        ],
        "by user; the latest of each, never moved back"
    );
    // A clear keeps them.
    s.clear().await.unwrap();
    assert_eq!(s.not_before_times().await.unwrap().len(), 2);
}

async fn an_import_authenticated_before_the_users_not_before_is_refused(s: &Sessions) {
    let (a, _) = s.create(NewSession::for_user("alice")).await.unwrap();
    let (b, _) = s.create(NewSession::for_user("bob")).await.unwrap();
    let (v, _) = s.create(NewSession::anonymous()).await.unwrap();
    s.put(&v, "cart", &3u8).await.unwrap();
    // A backup, taken before the password change.
    let mut backup = Vec::new();
    s.export(|r| {
        backup.push(r);
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(backup.len(), 3);
    next_ms().await;
    assert_eq!(s.revoke_user_before("alice", now()).await.unwrap(), 1);
    // The backup comes back after a clear (or onto a store the change reached):
    // alice's session stays out, the others return.
    s.clear().await.unwrap();
    let mut imported = Vec::new();
    for r in backup {
        let user = r.user.as_ref().map(|u| u.to_string());
        imported.push((user, s.import(r).await.unwrap()));
    }
    imported.sort();
    assert_eq!(
        imported,
        vec![
            (None, true),
            (Some("alice".into()), false),
            (Some("bob".into()), true)
        ]
    );
    assert!(s.get(&a).await.unwrap().is_none(), "refused, not admitted");
    assert!(s.sessions_of("alice").await.unwrap().is_empty());
    assert!(s.get(&b).await.unwrap().is_some());
    assert_eq!(
        s.get(&v).await.unwrap().unwrap().get::<u8>("cart").unwrap(),
        Some(3)
    );
    assert_eq!(s.len().await.unwrap(), 2);
}

async fn revoke_user_before_racing_creates_and_logins_leaves_nothing_older_readable(s: &Sessions) {
    let mut tasks = Vec::new();
    for k in 0..4 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..40 {
                let t = if (i + k) % 2 == 0 {
                    s.create(NewSession::for_user("racer")).await.unwrap().0
                } else {
                    let (t, _) = s.create(NewSession::anonymous()).await.unwrap();
                    let t = s.login(&t, "racer").await.unwrap();
                    match s.rotate(&t).await {
                        Ok(rotated) => rotated,
                        Err(Error::Ended) => t, // revoked between the two
                        Err(e) => panic!("{e}"),
                    }
                };
                mine.push(t);
            }
            mine
        }));
    }
    let mut revoked = 0;
    let mut last = Timestamp(0);
    for _ in 0..5 {
        tokio::time::sleep(ms(2)).await;
        last = now();
        revoked += s.revoke_user_before("racer", last).await.unwrap();
    }
    let (found, live) = live_and_listed(s, "racer", tasks).await;
    assert_eq!(found, live.len(), "the index lists only live sessions");
    assert_eq!(found + revoked, 160, "every session is live or revoked");
    for x in s.sessions_of("racer").await.unwrap() {
        assert!(
            x.authenticated_at().unwrap() >= last,
            "a session authenticated before the last revocation is readable"
        );
    }
}

async fn auth_lifetime_counts_from_the_last_login(s: &Sessions) {
    let (visitor, _) = s.create(NewSession::anonymous()).await.unwrap();
    tokio::time::sleep(ms(1000)).await;
    // An anonymous session has no login to count from.
    assert!(s.get(&visitor).await.unwrap().is_some());
    let token = s.login(&visitor, "alice").await.unwrap();
    let got = s.get(&token).await.unwrap().unwrap();
    let auth = got.authenticated_at().unwrap();
    assert!(got.expires_at().as_millis() <= auth.as_millis() + 900);
    tokio::time::sleep(ms(1100)).await;
    assert!(
        s.get(&token).await.unwrap().is_none(),
        "past its login's lifetime"
    );
    assert!(s.sessions_of("alice").await.unwrap().is_empty());
}

async fn reads_rearm_the_idle_deadline_at_most_once_per_touch_interval(s: &Sessions) {
    let (token, c) = s
        .create(NewSession::anonymous().idle_timeout(ms(1600)))
        .await
        .unwrap();
    tokio::time::sleep(ms(500)).await;
    // Within the touch interval: the read does not move the idle deadline...
    let got = s.get(&token).await.unwrap().unwrap();
    assert_eq!(got.last_seen(), c.last_seen());
    assert_eq!(got.expires_at(), c.expires_at());
    tokio::time::sleep(ms(700)).await;
    // ...past it, a read does.
    let got = s.get(&token).await.unwrap().unwrap();
    assert!(got.last_seen() > c.last_seen());
    assert!(got.expires_at() > c.expires_at());
    // An explicit touch always does.
    s.touch(&token).await.unwrap();
    let touched = s.peek(&token).await.unwrap().unwrap();
    assert!(touched.last_seen() >= got.last_seen());
}

/// The ids of the next `n` `Ended { Evicted }` events, in order (other events
/// skipped; each within 5 seconds).
fn evictions_in(rx: &crossbeam_channel::Receiver<Event>, n: usize) -> Vec<sessiondb::SessionId> {
    let mut out = Vec::new();
    while out.len() < n {
        if let Event::Ended {
            session,
            user,
            reason: EndReason::Evicted,
        } = next(rx)
        {
            assert!(user.is_none(), "a signed-in session was evicted");
            out.push(session);
        }
    }
    out
}

async fn a_budget_evicts_the_least_recently_seen_anonymous_sessions_and_never_a_signed_in_one(
    s: &Sessions,
) {
    let rx = s.subscribe().await.unwrap();
    let mut ids = Vec::new();
    let mut tokens = Vec::new();
    let (alice, _) = s.create(NewSession::for_user("alice")).await.unwrap();
    for _ in 0..4 {
        tokio::time::sleep(ms(5)).await;
        let (t, c) = s.create(NewSession::anonymous()).await.unwrap();
        tokens.push(t);
        ids.push(c.id());
    }
    tokio::time::sleep(ms(5)).await;
    assert!(s.get(&tokens[0]).await.unwrap().is_some()); // a0 seen again
    // Full: each create ends the least recently seen anonymous session.
    tokio::time::sleep(ms(5)).await;
    s.create(NewSession::anonymous()).await.unwrap(); // a1 goes
    tokio::time::sleep(ms(5)).await;
    let bob = s.login(&tokens[2], "bob").await.unwrap(); // a2 signs in
    tokio::time::sleep(ms(5)).await;
    s.create(NewSession::anonymous()).await.unwrap(); // a3 goes
    tokio::time::sleep(ms(5)).await;
    s.create(NewSession::anonymous()).await.unwrap(); // a0 goes
    let evicted = evictions_in(&rx, 3);
    assert_eq!(evicted, vec![ids[1], ids[3], ids[0]]);
    assert_eq!(s.len().await.unwrap(), 5);
    assert!(s.get(&alice).await.unwrap().is_some());
    assert!(s.get(&bob).await.unwrap().is_some());
}

async fn a_budget_full_of_signed_in_sessions_refuses_creates_with_full(s: &Sessions) {
    s.create(NewSession::for_user("alice")).await.unwrap();
    let (visitor, _) = s.create(NewSession::anonymous()).await.unwrap();
    // A login needs no room.
    let bob = s.login(&visitor, "bob").await.unwrap();
    for new in [NewSession::anonymous(), NewSession::for_user("carol")] {
        match s.create(new).await {
            Err(Error::Full {
                sessions: 2,
                max_sessions: Some(2),
                ..
            }) => {}
            other => panic!("expected Error::Full, got {other:?}"),
        }
    }
    assert_eq!(s.len().await.unwrap(), 2);
    s.end(&bob).await.unwrap();
    s.create(NewSession::anonymous()).await.unwrap();
}

async fn a_trial_session_ends_at_its_trial_unless_a_later_request_uses_it(s: &Sessions) {
    let (never, n) = s.create(NewSession::anonymous()).await.unwrap();
    assert_eq!(
        n.expires_at().as_millis(),
        n.created_at().as_millis() + 700,
        "on trial"
    );
    let (read, _) = s.create(NewSession::anonymous()).await.unwrap();
    let (written, _) = s.create(NewSession::anonymous()).await.unwrap();
    let (user, u) = s.create(NewSession::for_user("ada")).await.unwrap();
    assert!(u.expires_at().as_millis() > u.created_at().as_millis() + 700);
    tokio::time::sleep(ms(300)).await;
    let promoted = s.get(&read).await.unwrap().expect("inside its trial");
    assert!(promoted.expires_at().as_millis() > promoted.created_at().as_millis() + 700);
    s.put(&written, "k", &1u32).await.unwrap();
    tokio::time::sleep(ms(600)).await;
    assert!(s.get(&never).await.unwrap().is_none(), "past its trial");
    for t in [&read, &written, &user] {
        assert!(s.get(t).await.unwrap().is_some());
    }
}
