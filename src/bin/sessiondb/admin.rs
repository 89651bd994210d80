//! The commands that change a store in place: `revoke` (ends a user's sessions, or one
//! by its public id) and `compact` (rewrites a log as its live sessions).

use indicatif::{HumanBytes, HumanCount};
use serde_json::json;
use sessiondb::{SessionId, Timestamp};

use crate::output::{Fail, ms, say, say_json};
use crate::target::Ctx;

/// Which of a user's sessions `revoke --user` ends: all, those signed in before a
/// time, or all but one.
pub struct Which {
    pub before: Option<Timestamp>,
    pub keep: Option<SessionId>,
}

pub fn revoke(
    ctx: &Ctx,
    user: Option<&str>,
    which: Which,
    id: Option<SessionId>,
    json: bool,
) -> Result<(), Fail> {
    let store = ctx.handle(false)?;
    match (user, id) {
        (Some(user), _) => {
            let n = match which {
                Which {
                    before: Some(t), ..
                } => store.revoke_user_before(user, t)?,
                Which { keep: Some(id), .. } => {
                    // Only a session of that user: the operator named both.
                    let theirs = store
                        .get_by_id(id)?
                        .is_some_and(|s| s.user().is_some_and(|u| u.as_str() == user));
                    if !theirs {
                        return Err(Fail(format!(
                            "no live session of user {user:?} has id {id} in {}; nothing \
                             was revoked",
                            ctx.shown()
                        )));
                    }
                    store.revoke_others_by_id(id)?
                }
                _ => store.revoke_user(user)?,
            };
            store.close()?;
            let s = if n == 1 { "" } else { "s" };
            let mut out = json!({ "user": user, "revoked": n });
            let text = match which {
                Which {
                    before: Some(t), ..
                } => {
                    out["not_before_ms"] = t.as_millis().into();
                    format!(
                        "revoked {n} session{s} of user {user:?} signed in before {t}; \
                         none from before it can come back"
                    )
                }
                Which { keep: Some(id), .. } => {
                    out["kept"] = id.to_string().into();
                    format!("revoked {n} other session{s} of user {user:?}; kept {id}")
                }
                _ => format!("revoked {n} session{s} of user {user:?}"),
            };
            if json { say_json(&out) } else { say(&text) }
        }
        (None, Some(id)) => {
            let ended = store.end_by_id(id)?;
            store.close()?;
            if !ended {
                return Err(Fail(format!(
                    "no live session has id {id} in {}; nothing was revoked",
                    ctx.shown()
                )));
            }
            if json {
                say_json(&json!({ "id": id.to_string(), "revoked": 1 }))
            } else {
                say(&format!("revoked session {id}"))
            }
        }
        (None, None) => Err(Fail("name a user (--user USER) or a public id".into())),
    }
}

pub fn compact(ctx: &Ctx, json: bool) -> Result<(), Fail> {
    let dir = ctx.dir_for(
        "compact",
        "Redis keeps no log to rewrite (it reclaims an ended session's memory at once)",
        "PostgreSQL keeps no log of sessiondb's to rewrite (its autovacuum reclaims the \
         rows of ended sessions)",
    )?;
    let store = ctx.open(dir, false)?;
    let backend = store.stats().backend;
    let spinner = ctx
        .progress
        .spinner(format!("compacting {}", dir.display()));
    let result = store.compact();
    spinner.finish_and_clear();
    let cs = result?;
    store.close()?;
    if json {
        return say_json(&json!({
            "backend": backend,
            "bytes_before": cs.bytes_before,
            "bytes_after": cs.bytes_after,
            "sessions": cs.sessions,
            "duration_ms": ms(cs.duration),
        }));
    }
    if backend != "log" {
        return say(&format!(
            "the {backend} backend manages its own space: nothing to compact ({} on disk)",
            HumanBytes(cs.bytes_after)
        ));
    }
    let saved = if cs.bytes_before > 0 {
        100.0 * (1.0 - cs.bytes_after as f64 / cs.bytes_before as f64)
    } else {
        0.0
    };
    say(&format!(
        "compacted {}: {} -> {} on disk ({saved:.0}% reclaimed), {} live sessions, in {:.2} s",
        dir.display(),
        HumanBytes(cs.bytes_before),
        HumanBytes(cs.bytes_after),
        HumanCount(cs.sessions as u64),
        cs.duration.as_secs_f64()
    ))
}
