//! `sessiondb`: the command-line tool for a sessiondb store directory (cargo feature
//! `cli`), or for sessions kept in Redis (`--redis`, with the `redis` feature too) or
//! PostgreSQL (`--postgres`, with the `postgres` feature too).
//! This file only dispatches: it parses the command line ([`args`]), picks the store it
//! names ([`target`]) and runs the command: the read-only ones in [`inspect`], revoke
//! and compact in [`admin`], export and import in [`transfer`]. Below those: the
//! [`Handle`](handle::Handle) the commands share over every kind of store, how a
//! command prints and fails ([`output`]), the export format ([`jsonl`]), progress bars
//! ([`progress`]), text helpers ([`human`]) and the connection to a server
//! (`remote`).

mod admin;
mod args;
mod handle;
mod human;
mod inspect;
mod jsonl;
mod output;
mod progress;
#[cfg(any(feature = "redis", feature = "postgres"))]
mod remote;
mod target;
mod transfer;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command};
use crate::output::Fail;
use crate::progress::Progress;
use crate::target::Ctx;

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    let target = target::pick(&mut cli);
    let ctx = Ctx {
        target,
        backend: cli.backend,
        auth_lifetime: cli.auth_lifetime,
        quiet: cli.quiet,
        progress: Progress::new(cli.quiet),
    };
    match run(&ctx, cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(msg)) => {
            eprintln!("sessiondb: error: {msg}");
            ExitCode::from(1)
        }
    }
}

fn run(ctx: &Ctx, command: Command) -> Result<(), Fail> {
    match command {
        Command::Stats { json, prometheus } => inspect::stats(ctx, json, prometheus.as_deref()),
        Command::List { user, json } => inspect::list(ctx, &user, json),
        Command::Show { id, json } => inspect::show(ctx, id, json),
        Command::Revoke {
            user,
            before,
            keep,
            id,
            json,
        } => admin::revoke(
            ctx,
            user.as_deref(),
            admin::Which { before, keep },
            id,
            json,
        ),
        Command::Compact { json } => admin::compact(ctx, json),
        Command::Verify { json } => inspect::verify(ctx, json),
        Command::Export { out } => transfer::export(ctx, out.as_deref()),
        Command::Import {
            file,
            skip_existing,
            json,
        } => transfer::import(ctx, file.as_deref(), skip_existing, json),
    }
}
