//! The commands that move sessions in and out of a store: `export` (every live
//! session as JSON lines, to stdout or a private file written whole) and `import`
//! (check every line first, then import all or nothing). The format is [`jsonl`]'s.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Read, Write};
use std::path::Path;

use indicatif::HumanCount;
use serde_json::json;
use sessiondb::{Error, SessionId};

use crate::args::cli_limits;
use crate::handle::Handle;
use crate::jsonl;
use crate::output::{Fail, io_fail, say, say_json};
use crate::target::Ctx;

/// Writes every live session of `store` to `w` as JSON lines, then every user's
/// not-before time; returns how many sessions.
fn write_export(ctx: &Ctx, store: &Handle, w: &mut impl Write) -> Result<usize, Fail> {
    let bar = ctx
        .progress
        .sessions(store.len()? as u64, "exporting".into());
    let n = store.export(|rec| {
        serde_json::to_writer(&mut *w, &jsonl::to_line(&rec))
            .map_err(io::Error::from)
            .and_then(|()| w.write_all(b"\n"))
            .map_err(|source| Error::Io {
                context: "writing the export".into(),
                source,
            })?;
        bar.inc(1);
        Ok(())
    });
    bar.finish_and_clear();
    let n = n?;
    for (user, at) in store.not_before_times()? {
        serde_json::to_writer(&mut *w, &jsonl::not_before_line(&user, at))
            .map_err(io::Error::from)
            .and_then(|()| w.write_all(b"\n"))
            .map_err(io_fail("writing the export".into()))?;
    }
    w.flush().map_err(io_fail("writing the export".into()))?;
    Ok(n)
}

/// Creates (or truncates) `path` for writing, readable and writable by its owner only
/// (0600 on Unix, whatever the umask): an export holds every session's data. A file
/// left there by an interrupted run gets that mode too.
fn private_file(path: &Path) -> io::Result<File> {
    #[cfg(unix)]
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    o.mode(0o600);
    let f = o.open(path)?;
    #[cfg(unix)]
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

pub fn export(ctx: &Ctx, out: Option<&Path>) -> Result<(), Fail> {
    let store = ctx.handle(false)?;
    let Some(path) = out else {
        let n = write_export(ctx, &store, &mut BufWriter::new(io::stdout().lock()))?;
        ctx.note(&format!(
            "exported {} sessions from {}",
            HumanCount(n as u64),
            ctx.shown()
        ));
        return Ok(());
    };
    let Some(name) = path.file_name() else {
        return Err(Fail(format!("--out {}: not a file name", path.display())));
    };
    let mut partial_name = name.to_os_string();
    partial_name.push(".partial");
    let partial = path.with_file_name(partial_name);
    let written = (|| {
        let file =
            private_file(&partial).map_err(io_fail(format!("creating {}", partial.display())))?;
        let mut w = BufWriter::new(file);
        let n = write_export(ctx, &store, &mut w)?;
        let file = w
            .into_inner()
            .map_err(|e| Fail(format!("writing {}: {}", partial.display(), e.error())))?;
        file.sync_all()
            .map_err(io_fail(format!("syncing {}", partial.display())))?;
        std::fs::rename(&partial, path).map_err(io_fail(format!(
            "renaming {} to {}",
            partial.display(),
            path.display()
        )))?;
        Ok(n)
    })();
    match written {
        Ok(n) => {
            ctx.note(&format!(
                "exported {} sessions from {} to {}",
                HumanCount(n as u64),
                ctx.shown(),
                path.display()
            ));
            Ok(())
        }
        Err(fail) => {
            let _ = std::fs::remove_file(&partial);
            Err(fail)
        }
    }
}

/// Line numbers for a message: "line 4", "lines 4, 9, 17, …".
fn line_list(lines: &[usize]) -> String {
    const SHOWN: usize = 10;
    let mut parts: Vec<String> = lines.iter().take(SHOWN).map(usize::to_string).collect();
    if lines.len() > SHOWN {
        parts.push("…".into());
    }
    format!(
        "line{} {}",
        if lines.len() == 1 { "" } else { "s" },
        parts.join(", ")
    )
}

pub fn import(ctx: &Ctx, file: Option<&Path>, skip_existing: bool, json: bool) -> Result<(), Fail> {
    let (input, len, source): (Box<dyn Read>, Option<u64>, String) = match file {
        Some(p) if p != Path::new("-") => {
            let f = File::open(p).map_err(io_fail(format!("opening {}", p.display())))?;
            let len = f.metadata().ok().map(|m| m.len());
            (Box::new(f), len, p.display().to_string())
        }
        _ => {
            if io::stdin().is_terminal() {
                ctx.note("reading sessions from stdin (end with Ctrl-D)");
            }
            (Box::new(io::stdin().lock()), None, "stdin".into())
        }
    };
    let limits = cli_limits();

    // 1. Read and check every line, before the store is even opened (so a bad file
    //    never creates a directory); import nothing if any is bad.
    let bar = ctx.progress.bytes(len, format!("checking {source}"));
    let mut reader = BufReader::new(bar.wrap_read(input));
    let mut records = Vec::new();
    let mut not_before = Vec::new();
    let mut bad: Vec<(usize, String)> = Vec::new();
    let (mut ids, mut hashes) = (HashMap::new(), HashMap::new());
    let mut buf = Vec::new();
    let mut line = 0usize;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(io_fail(format!("reading {source}")))?;
        if n == 0 {
            break;
        }
        line += 1;
        let Ok(text) = std::str::from_utf8(&buf) else {
            bad.push((line, "not valid UTF-8".into()));
            continue;
        };
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let rec = match jsonl::parse(text, &limits) {
            Ok(jsonl::Item::Session(rec)) => *rec,
            Ok(jsonl::Item::NotBefore(user, at)) => {
                not_before.push((user, at));
                continue;
            }
            Err(e) => {
                bad.push((line, e));
                continue;
            }
        };
        if let Some(first) = ids.get(&rec.id.as_u128()) {
            bad.push((
                line,
                format!("session {} already appears on line {first}", rec.id),
            ));
            continue;
        }
        if let Some(first) = hashes.get(&rec.token_hash.as_u128()) {
            bad.push((
                line,
                format!("its token_hash already appears on line {first}"),
            ));
            continue;
        }
        ids.insert(rec.id.as_u128(), line);
        hashes.insert(rec.token_hash.as_u128(), line);
        records.push((line, rec));
    }
    bar.finish_and_clear();
    drop((ids, hashes));
    refuse_bad_lines(&source, &bad)?;

    // 2. Check against what the store holds.
    let store = ctx.handle(true)?;
    let mut existing: Vec<usize> = Vec::new();
    let bar = ctx
        .progress
        .sessions(records.len() as u64, "checking the store".into());
    let live = store.live(records.iter().map(|(_, rec)| rec.id).collect(), || {
        bar.inc(1)
    });
    bar.finish_and_clear();
    let mut new = Vec::with_capacity(records.len());
    for ((line, rec), live) in records.into_iter().zip(live?) {
        if !live {
            new.push((line, rec));
        } else if skip_existing {
            existing.push(line);
        } else {
            bad.push((
                line,
                format!(
                    "session {} is already in the store (--skip-existing skips such lines)",
                    rec.id
                ),
            ));
        }
    }
    let records = new;
    refuse_bad_lines(&source, &bad)?;

    // 3. Import; on a refusal, take back what this run imported.
    let bar = ctx
        .progress
        .sessions(records.len() as u64, "importing".into());
    let mut imported: Vec<(usize, SessionId)> = Vec::with_capacity(records.len());
    let mut expired: Vec<usize> = Vec::new();
    let mut refused: Option<(usize, Error)> = None;
    let (lines, records): (Vec<_>, Vec<_>) = records.into_iter().unzip();
    let ids: Vec<SessionId> = records.iter().map(|rec| rec.id).collect();
    store.import_each(records, |i, result| {
        bar.inc(1);
        let line = lines[i];
        match result {
            Ok(true) => imported.push((line, ids[i])),
            Ok(false) => expired.push(line),
            Err(Error::Exists { .. }) if skip_existing => existing.push(line),
            Err(e) => {
                // With calls in flight, more than one may fail: report the first line.
                if refused.as_ref().is_none_or(|(l, _)| line < *l) {
                    refused = Some((line, e));
                }
            }
        }
        refused.is_none()
    });
    bar.finish_and_clear();
    if let Some((line, e)) = refused {
        imported.sort_unstable();
        return Err(undo(&store, &source, line, &e, &imported));
    }
    // 4. The users' not-before times, last: they cannot be taken back. (A session of
    //    the file authenticated before its user's time ends here; an export never has
    //    one.)
    let mut revoked = 0;
    for (user, at) in &not_before {
        revoked += store.revoke_user_before(user.as_str(), *at)?;
    }
    store.close()?;
    imported.sort_unstable();
    expired.sort_unstable();
    existing.sort_unstable();
    if json {
        return say_json(&json!({
            "imported": imported.len(),
            "not_before": not_before.len(),
            "revoked": revoked,
            "skipped_expired": expired,
            "skipped_existing": existing,
        }));
    }
    let n = imported.len();
    let mut text = format!(
        "imported {n} session{} into {}",
        if n == 1 { "" } else { "s" },
        ctx.shown()
    );
    if !not_before.is_empty() {
        let users = not_before.len();
        text.push_str(&format!(
            "\nand the not-before times of {users} user{} ({revoked} session{} signed in \
             before them ended)",
            if users == 1 { "" } else { "s" },
            if revoked == 1 { "" } else { "s" }
        ));
    }
    if !expired.is_empty() {
        text.push_str(&format!(
            "\nskipped {} already ended: past their deadline, or revoked by their user's \
             not-before time ({})",
            expired.len(),
            line_list(&expired)
        ));
    }
    if !existing.is_empty() {
        text.push_str(&format!(
            "\nskipped {} already in the store ({})",
            existing.len(),
            line_list(&existing)
        ));
    }
    say(&text)
}

/// Fails, listing the first bad lines, if there are any.
fn refuse_bad_lines(source: &str, bad: &[(usize, String)]) -> Result<(), Fail> {
    const SHOWN: usize = 20;
    if bad.is_empty() {
        return Ok(());
    }
    for (line, msg) in bad.iter().take(SHOWN) {
        eprintln!("{source}:{line}: {msg}");
    }
    if bad.len() > SHOWN {
        eprintln!("… and {} more bad lines", bad.len() - SHOWN);
    }
    Err(Fail(format!(
        "{} bad line{} in {source}; nothing was imported",
        bad.len(),
        if bad.len() == 1 { "" } else { "s" }
    )))
}

/// After the store refused line `line`, ends the sessions this run imported, so the
/// import leaves nothing behind; the failure says exactly what, if anything, remains.
fn undo(
    store: &Handle,
    source: &str,
    line: usize,
    e: &Error,
    imported: &[(usize, SessionId)],
) -> Fail {
    let refused = format!("{source}:{line}: the store refused the session: {e}");
    let mut left: Vec<usize> = Vec::new();
    let mut first_err = None;
    for &(l, id) in imported {
        if let Err(err) = store.end_by_id(id) {
            left.push(l);
            first_err.get_or_insert(err);
        }
    }
    if let Err(err) = store.flush() {
        // Nothing taken back is known to be durable: report every line as left.
        left = imported.iter().map(|&(l, _)| l).collect();
        first_err.get_or_insert(err);
    }
    match first_err {
        None => Fail(format!(
            "{refused}; the {} session{} this run imported were removed again: nothing \
             was imported",
            imported.len(),
            if imported.len() == 1 { "" } else { "s" }
        )),
        Some(err) => Fail(format!(
            "{refused}; removing the sessions this run imported failed too ({err}): the \
             sessions of {} may remain",
            line_list(&left)
        )),
    }
}
