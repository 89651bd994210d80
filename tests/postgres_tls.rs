//! TLS to PostgreSQL with the cargo feature `postgres-tls`, over real handshakes: servers
//! of the tests' own (tests/support/postgres_server.rs) with `ssl=on` and a certificate
//! for 127.0.0.1 and localhost signed by a throwaway CA that the `openssl` command line
//! makes for each test.
//!
//! What is proven: with the CA given through `PostgresOptions::root_certificate`,
//! `sslmode=require` (and `prefer`, the default) connect over TLS — the server itself says
//! so of every sessiondb connection, the subscriber's included — and the store works;
//! without the CA, or for a host the certificate does not name, the connection is refused
//! and nothing ever reaches the server in plain text; a server without TLS refuses
//! `require` and serves `prefer` in plain text; `Sessions::open` refuses a certificate
//! from an unknown CA; a PEM that holds no usable certificate is refused before any
//! connection.
//!
//! Skipped with a message if PostgreSQL or `openssl` is not installed, unless
//! `SESSIONDB_REQUIRE_POSTGRES=1`.

#[path = "support/postgres_server.rs"]
mod postgres_server;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use postgres_server::PostgresServer;
use sessiondb::{Error, NewSession, Options, PostgresOptions, PostgresStore, Sessions};

/// A throwaway CA and a server certificate it signed, all PEM.
struct Certs {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

fn required() -> bool {
    std::env::var("SESSIONDB_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

/// Runs `openssl` with `args` (split at spaces) in `dir`; a failure is a panic.
fn openssl(dir: &Path, args: &str) {
    let args: Vec<&str> = args.split_whitespace().collect();
    let out = Command::new("openssl")
        .args(&args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running openssl {args:?}: {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (P-256, valid two days) and a certificate it signed for IP 127.0.0.1 and DNS
/// localhost; `None` (after printing why) if `openssl` is not installed, or a panic if
/// `SESSIONDB_REQUIRE_POSTGRES=1`.
fn make_certs() -> Option<Certs> {
    if Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        let why = "the openssl command line is not installed (apt-get install openssl)";
        if required() {
            panic!("{why}");
        }
        eprintln!("skipped: {why}");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ec_key = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
    openssl(
        d,
        &format!(
            "req -x509 {ec_key} -keyout ca.key -out ca.crt -days 2 \
             -subj /CN=sessiondb-throwaway-test-CA \
             -addext basicConstraints=critical,CA:TRUE \
             -addext keyUsage=critical,keyCertSign,cRLSign"
        ),
    );
    openssl(
        d,
        &format!("req {ec_key} -keyout server.key -out server.csr -subj /CN=localhost"),
    );
    std::fs::write(
        d.join("server.ext"),
        "subjectAltName = IP:127.0.0.1, DNS:localhost\n\
         basicConstraints = critical, CA:FALSE\n\
         keyUsage = critical, digitalSignature\n\
         extendedKeyUsage = serverAuth\n",
    )
    .unwrap();
    openssl(
        d,
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -set_serial 2 -days 2 \
         -extfile server.ext -out server.crt",
    );
    let read = |name: &str| std::fs::read(d.join(name)).unwrap();
    Some(Certs {
        ca: read("ca.crt"),
        cert: read("server.crt"),
        key: read("server.key"),
    })
}

/// A server of its own (started off the runtime's threads: it blocks) with `settings`
/// and `files` in its data directory.
async fn server_with(
    settings: &[&'static str],
    files: Vec<(&'static str, Vec<u8>)>,
) -> Option<PostgresServer> {
    let settings = settings.to_vec();
    tokio::task::spawn_blocking(move || {
        let files: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, &b[..])).collect();
        PostgresServer::start_with(&settings, &files)
    })
    .await
    .unwrap()
}

/// A server with `ssl=on` and the certificate; it logs every connection, with its
/// application name and whether it is over TLS.
async fn tls_server(certs: &Certs) -> Option<PostgresServer> {
    server_with(
        &[
            "ssl=on",
            "ssl_cert_file=server.crt",
            "ssl_key_file=server.key",
            "log_connections=on",
        ],
        vec![
            ("server.crt", certs.cert.clone()),
            ("server.key", certs.key.clone()),
        ],
    )
    .await
}

/// `url` (the server's, no parameters) with `query` appended.
fn with(url: &str, query: &str) -> String {
    if query.is_empty() {
        url.to_owned()
    } else {
        format!("{url}?{query}")
    }
}

fn popts() -> PostgresOptions {
    PostgresOptions::default()
        .pool_size(4)
        .response_timeout(Duration::from_secs(5))
}

fn no_reaper() -> Options {
    Options::default().reaper_interval(None)
}

/// What the server says of the connections of sessiondb (`application_name` `sessiondb`
/// for the pool, `sessiondb-events:<schema>` for a subscriber): each one's name, whether
/// it is over TLS, and the protocol. Asked by `psql`, a connection of its own.
async fn sessiondb_connections(server: &PostgresServer) -> Vec<(String, bool, String)> {
    let url = server.url();
    let out = tokio::task::spawn_blocking(move || {
        postgres_server::psql(
            &url,
            "SELECT a.application_name, s.ssl, coalesce(s.version, '') \
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name LIKE 'sessiondb%' ORDER BY 1",
        )
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{e}"));
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            (f[0].to_owned(), f[1] == "t", f[2].to_owned())
        })
        .collect()
}

/// The server log's "connection authorized" lines for sessiondb's connections.
fn authorized_sessiondb_connections(server: &PostgresServer) -> Vec<String> {
    std::fs::read_to_string(server.log_path())
        .unwrap()
        .lines()
        .filter(|l| l.contains("connection authorized") && l.contains("application_name=sessiondb"))
        .map(str::to_owned)
        .collect()
}

/// The store works: a session created, read (by `other` too), its user revoked.
async fn exercise(store: &PostgresStore, other: &PostgresStore) {
    let (token, _) = store.create(NewSession::for_user("alice")).await.unwrap();
    assert!(store.get(&token).await.unwrap().is_some());
    let on_other = other
        .get(&token)
        .await
        .unwrap()
        .expect("the other store sees it");
    assert_eq!(on_other.user().map(|u| u.as_str()), Some("alice"));
    assert_eq!(store.revoke_user("alice").await.unwrap(), 1);
    assert!(store.get(&token).await.unwrap().is_none());
    assert!(other.get(&token).await.unwrap().is_none());
}

/// The error of a connection that must fail: `Error::Unavailable`, and its reason.
fn unavailable<T: std::fmt::Debug>(r: Result<T, Error>, what: &str) -> String {
    match r {
        Err(Error::Unavailable { reason, .. }) => reason,
        other => panic!("{what}: expected Error::Unavailable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_with_the_root_certificate_connects_over_tls_and_works() {
    let Some(certs) = make_certs() else { return };
    let Some(server) = tls_server(&certs).await else {
        return;
    };
    let ca = popts().root_certificate(certs.ca.clone());
    let require = with(&server.url(), "sslmode=require");
    let store = PostgresStore::connect_with(&require, no_reaper(), ca.clone())
        .await
        .unwrap();
    // A second node by the certificate's DNS name, with the default sslmode (`prefer`).
    let by_name = server.url().replace("127.0.0.1", "localhost");
    let other = PostgresStore::connect_with(&by_name, no_reaper(), ca)
        .await
        .unwrap();
    // The subscriber's connection is its own: over TLS too, and it delivers.
    let events = store.subscribe().await.unwrap();
    exercise(&store, &other).await;
    // A clone: the subscriber (and its connection) lives while `events` does.
    let rx = events.clone();
    let got = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(got.is_ok(), "no event through the TLS subscriber: {got:?}");

    let conns = sessiondb_connections(&server).await;
    assert!(
        conns.iter().any(|(name, ..)| name == "sessiondb")
            && conns
                .iter()
                .any(|(name, ..)| name.starts_with("sessiondb-events:")),
        "the pool's and the subscriber's connections are open: {conns:?}"
    );
    assert!(
        conns
            .iter()
            .all(|(_, ssl, version)| *ssl && version.starts_with("TLSv1.")),
        "every sessiondb connection is over TLS, says the server: {conns:?}"
    );
    let authorized = authorized_sessiondb_connections(&server);
    assert!(
        authorized.len() >= conns.len() && authorized.iter().all(|l| l.contains("SSL enabled")),
        "the server's log: every sessiondb connection it authorized was over TLS: \
         {authorized:#?}"
    );
    drop(events);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_refused_and_nothing_falls_back_to_plain_text() {
    let Some(certs) = make_certs() else { return };
    let Some(server) = tls_server(&certs).await else {
        return;
    };
    // Without the CA: the platform's roots do not know it.
    for query in ["sslmode=require", "", "sslmode=prefer"] {
        let url = with(&server.url(), query);
        let reason = unavailable(
            PostgresStore::connect_with(&url, no_reaper(), popts()).await,
            &url,
        );
        assert!(
            reason.contains("UnknownIssuer"),
            "{url}: refused for its certificate: {reason}"
        );
    }
    // With the CA, but for a name the certificate does not hold: `host` is what is
    // checked, `hostaddr` where the connection goes.
    let port = server.port();
    let url = format!(
        "postgres://sessiondb@db.invalid:{port}/sessiondb?hostaddr=127.0.0.1&sslmode=require"
    );
    let ca = popts().root_certificate(certs.ca.clone());
    let reason = unavailable(
        PostgresStore::connect_with(&url, no_reaper(), ca).await,
        &url,
    );
    assert!(
        reason.contains("not valid for name"),
        "refused for the name: {reason}"
    );

    assert_eq!(
        sessiondb_connections(&server).await,
        [],
        "no sessiondb connection is open"
    );
    let authorized = authorized_sessiondb_connections(&server);
    assert!(
        authorized.is_empty(),
        "the server authorized no sessiondb connection, over TLS or not: {authorized:#?}"
    );
    // The handshakes did reach the server, and it saw them fail (its backend may log
    // that a moment after the client gave up).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(server.log_path())
        .unwrap()
        .contains("could not accept SSL connection")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the server saw the failed handshakes; {}",
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_tls_refuses_require_and_serves_prefer_in_plain_text() {
    let Some(server) = server_with(&["ssl=off"], Vec::new()).await else {
        return;
    };
    let require = with(&server.url(), "sslmode=require");
    let reason = unavailable(
        PostgresStore::connect_with(&require, no_reaper(), popts()).await,
        &require,
    );
    assert!(
        reason.contains("server does not support TLS"),
        "refused: {reason}"
    );

    let prefer = with(&server.url(), "sslmode=prefer");
    let store = PostgresStore::connect_with(&prefer, no_reaper(), popts())
        .await
        .unwrap();
    let other = PostgresStore::connect_with(&server.url(), no_reaper(), popts())
        .await
        .unwrap();
    exercise(&store, &other).await;
    let conns = sessiondb_connections(&server).await;
    assert!(
        !conns.is_empty() && conns.iter().all(|(_, ssl, _)| !ssl),
        "plain text, says the server: {conns:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_open_refuses_a_certificate_from_an_unknown_ca() {
    let Some(certs) = make_certs() else { return };
    let Some(server) = tls_server(&certs).await else {
        return;
    };
    for query in ["sslmode=require", ""] {
        let url = with(&server.url(), query);
        let reason = unavailable(Sessions::open(&url, Options::default()).await, &url);
        assert!(reason.contains("UnknownIssuer"), "{url}: {reason}");
    }
    assert_eq!(sessiondb_connections(&server).await, []);
    assert_eq!(
        authorized_sessiondb_connections(&server),
        Vec::<String>::new()
    );

    // What was refused is the certificate: a URL that asks for no TLS connects.
    let plain = with(&server.url(), "sslmode=disable");
    let sessions = Sessions::open(&plain, Options::default()).await.unwrap();
    let (token, _) = sessions.create(NewSession::anonymous()).await.unwrap();
    assert!(sessions.get(&token).await.unwrap().is_some());
    let conns = sessiondb_connections(&server).await;
    assert!(
        !conns.is_empty() && conns.iter().all(|(_, ssl, _)| !ssl),
        "sslmode=disable: plain text, says the server: {conns:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pem_without_a_usable_certificate_is_refused_before_connecting() {
    let bad_pems: [&[u8]; 4] = [
        b"",
        b"not a PEM at all",
        // A PEM of something else: no CERTIFICATE section.
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        // A CERTIFICATE section whose bytes are no certificate.
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ];
    for pem in bad_pems {
        let shown = String::from_utf8_lossy(pem).into_owned();
        let popts = popts().root_certificate(pem);
        match popts.validate() {
            Err(Error::InvalidOption { name, .. }) => {
                assert_eq!(name, "PostgresOptions::root_certificate", "{shown:?}")
            }
            other => panic!("{shown:?}: validate gave {other:?}"),
        }
        // Port 1: nothing listens. The PEM is refused first.
        let r = PostgresStore::connect_with("postgres://a@127.0.0.1:1/a", no_reaper(), popts).await;
        assert!(
            matches!(
                r,
                Err(Error::InvalidOption {
                    name: "PostgresOptions::root_certificate",
                    ..
                })
            ),
            "{shown:?}: connect gave {r:?}"
        );
    }
    // A good one after a bad one is still refused; good ones alone pass.
    if let Some(certs) = make_certs() {
        let good = popts().root_certificate(certs.ca.clone());
        good.validate().unwrap();
        good.clone()
            .root_certificate(certs.ca.clone())
            .validate()
            .unwrap();
        assert!(good.root_certificate("junk").validate().is_err());
    }
}
