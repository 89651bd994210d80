//! `sessiondb-axum-app`: runs the example app on the durable store in a data directory
//! (`--help` for the flags). Sessions live in `DATA/sessions` (sessiondb's log), the
//! accounts in `DATA/users.json`.

use std::process::ExitCode;

use sessiondb::{Options, Store};
use sessiondb_axum_app::cli::{self, Command};
use sessiondb_axum_app::{Users, app};

#[tokio::main]
async fn main() -> ExitCode {
    let env_dir = std::env::var(cli::DATA_DIR_ENV).ok();
    let args = match cli::parse(std::env::args().skip(1), env_dir) {
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
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| format!("cannot create {}: {e}", args.data_dir.display()))?;
    let sessions_dir = args.data_dir.join("sessions");
    // The store's own idle timeout and lifetime are only defaults: the app gives every
    // session its own (from the flags) when it creates or logs it in.
    let store = Store::open_with(&sessions_dir, Options::default()).map_err(|e| {
        format!(
            "cannot open the session store in {}: {e}",
            sessions_dir.display()
        )
    })?;
    let report = store.recovery_report();
    let users = Users::open(args.data_dir.join("users.json"))?;
    println!(
        "sessiondb-axum-app: {} accounts, {} live sessions (recovered in {:?}) in {}",
        users.len(),
        store.len(),
        report.duration,
        args.data_dir.display()
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
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    // Flush and release the directory's lock before exiting.
    store.close()?;
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
