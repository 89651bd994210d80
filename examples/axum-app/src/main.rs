//! `sessiondb-axum-app`: runs the example app (`--help` for the flags). Sessions live
//! in `DATA/sessions` (sessiondb's log) or where `--sessions` says (`memory:`, another
//! directory, or `redis://…` or `postgres://…` to share them between processes); the
//! accounts in `DATA/users.json`.

use std::net::SocketAddr;
use std::process::ExitCode;

use sessiondb::Sessions;
use sessiondb_axum_app::cli::{self, Command};
use sessiondb_axum_app::{Users, app};

#[tokio::main]
async fn main() -> ExitCode {
    let env_dir = std::env::var(cli::DATA_DIR_ENV).ok();
    let env_sessions = std::env::var(cli::SESSIONS_ENV).ok();
    let args = match cli::parse(std::env::args().skip(1), env_dir, env_sessions) {
        Ok(Command::Run(args)) => args,
        Ok(Command::Help) => {
            println!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("sessiondb-axum-app: {e}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sessiondb-axum-app: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: cli::Args) -> Result<(), Box<dyn std::error::Error>> {
    sessiondb_axum_app::users::create_data_dir(&args.data_dir)
        .map_err(|e| format!("cannot create {}: {e}", args.data_dir.display()))?;
    // The store's own idle timeout and lifetime are only defaults: the app gives every
    // session its own (from the flags) when it creates or logs it in.
    let config = args.sessions.clone().unwrap_or_else(|| {
        args.data_dir
            .join("sessions")
            .to_string_lossy()
            .into_owned()
    });
    // --metrics: the recorder goes in before the store opens (the store registers its
    // histograms then).
    if args.config.metrics {
        sessiondb_axum_app::metrics::recorder()?;
    }
    let store = Sessions::open(&config, args.config.store_options())
        .await
        .map_err(|e| format!("cannot open the sessions at {}: {e}", cli::redact(&config)))?;
    let users = Users::open(args.data_dir.join("users.json"))?;
    let live = store.len().await?;
    let recovered = store
        .as_embedded()
        .map(|s| format!(", recovered in {:?}", s.recovery_report().duration))
        .unwrap_or_default();
    println!(
        "sessiondb-axum-app: {} accounts in {}; {live} live sessions in {} ({}{recovered})",
        users.len(),
        args.data_dir.display(),
        cli::redact(&config),
        store.backend_name(),
    );
    let router = app(store.clone(), users, args.config.clone())?;
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
    let scheme = if args.config.secure_cookies {
        "https (behind your TLS proxy; --insecure-http for plain http)"
    } else {
        "http"
    };
    println!(
        "sessiondb-axum-app: listening on {} — open it over {scheme}; Ctrl-C stops",
        listener.local_addr()?
    );
    if args.config.metrics {
        let who = if args.config.metrics_public {
            "to any peer"
        } else {
            "to loopback peers only"
        };
        println!(
            "sessiondb-axum-app: metrics at /metrics {who}, store=\"{}\"",
            args.config.metrics_label
        );
    }
    // With each connection's peer address, which the devices page shows (its network).
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    // Flush before exiting (Redis, PostgreSQL: nothing to do); the directory's lock is
    // released when the last handle drops, at the end of this function.
    if let Some(embedded) = store.as_embedded() {
        embedded.flush()?;
    }
    println!("sessiondb-axum-app: stopped");
    Ok(())
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM, so the store is closed cleanly either way.
async fn shutdown_signal() {
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
