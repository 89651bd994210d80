//! How a session signed in: the [`SignIn`] an app records at login or step-up (the
//! methods used and the assurance level reached), the [`Factor`]s a session keeps of it,
//! the level those give at a moment under the per-level lifetimes, and the
//! [`Criterion`] by which a user's sessions are revoked in bulk.
//!
//! Levels are the app's own scale (Kratos's AAL1/AAL2, Keycloak's levels of
//! assurance): 0 is "signed in, nothing said about how", higher is stronger. A session
//! keeps at most [`SignIn::MAX_FACTORS`] factors, one per method: a step-up with a
//! method the session already has replaces that method's entry.

use std::sync::Arc;

use crate::clock::Timestamp;
use crate::error::{Error, Result};
pub(crate) use crate::options::LevelLifetimes;

/// What a login or a step-up proved: the method or methods used (`"password"`,
/// `"otp"`, `"webauthn"`, or the app's own names) and the assurance level reached.
///
/// ```
/// use sessiondb::SignIn;
/// let strong = SignIn::with("password").and("otp").level(2);
/// assert_eq!(strong.methods(), ["password", "otp"]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignIn {
    pub(crate) methods: Vec<String>,
    pub(crate) level: u8,
}

impl SignIn {
    /// Most factors a session keeps (distinct methods).
    pub const MAX_FACTORS: usize = 8;
    /// Longest method name, in bytes.
    pub const MAX_METHOD_BYTES: usize = 32;

    /// A sign-in with one method, at level 1.
    pub fn with(method: impl Into<String>) -> SignIn {
        SignIn {
            methods: vec![method.into()],
            level: 1,
        }
    }

    /// One more method used in the same step.
    pub fn and(mut self, method: impl Into<String>) -> SignIn {
        self.methods.push(method.into());
        self
    }

    /// The assurance level the step reached (default 1).
    pub fn level(mut self, level: u8) -> SignIn {
        self.level = level;
        self
    }

    /// The methods, in the order given.
    pub fn methods(&self) -> Vec<&str> {
        self.methods.iter().map(String::as_str).collect()
    }

    /// Checks the methods: one to [`SignIn::MAX_FACTORS`] of them, distinct, each one
    /// to [`SignIn::MAX_METHOD_BYTES`] bytes of ASCII letters, digits, `-`, `_`, `.`
    /// and `:`.
    ///
    /// # Errors
    /// [`Error::InvalidSignIn`] saying what is wrong.
    pub(crate) fn check(&self) -> Result<()> {
        if self.methods.is_empty() {
            return Err(Error::InvalidSignIn {
                reason: "name at least one method".into(),
            });
        }
        if self.methods.len() > SignIn::MAX_FACTORS {
            return Err(Error::InvalidSignIn {
                reason: format!("at most {} methods", SignIn::MAX_FACTORS),
            });
        }
        for (i, m) in self.methods.iter().enumerate() {
            check_method(m)?;
            if self.methods[..i].contains(m) {
                return Err(Error::InvalidSignIn {
                    reason: format!("method {m:?} named twice"),
                });
            }
        }
        Ok(())
    }

    /// The session's factors after this step at `at`: `before` with each of this
    /// step's methods added or, if already there, replaced.
    ///
    /// # Errors
    /// [`Error::InvalidSignIn`] if the result would hold more than
    /// [`SignIn::MAX_FACTORS`] methods.
    pub(crate) fn apply(&self, before: &[Factor], at: Timestamp) -> Result<Vec<Factor>> {
        let mut out: Vec<Factor> = before
            .iter()
            .filter(|f| !self.methods.iter().any(|m| **m == *f.method))
            .cloned()
            .collect();
        out.extend(self.methods.iter().map(|m| Factor {
            method: Arc::from(m.as_str()),
            level: self.level,
            at,
        }));
        if out.len() > SignIn::MAX_FACTORS {
            return Err(Error::InvalidSignIn {
                reason: format!(
                    "the session would hold {} methods, more than {}",
                    out.len(),
                    SignIn::MAX_FACTORS
                ),
            });
        }
        // Kept per session for its life: no spare capacity.
        out.shrink_to_fit();
        Ok(out)
    }
}

/// The text a shared backend keeps a session's factors as: `method level at` (at in
/// ms), joined by `;` — readable in `redis-cli` and `psql`.
#[cfg(any(feature = "redis", feature = "postgres"))]
pub(crate) fn factors_to_text(factors: &[Factor]) -> String {
    let parts: Vec<String> = factors
        .iter()
        .map(|f| format!("{} {} {}", f.method, f.level, f.at.0))
        .collect();
    parts.join(";")
}

/// The factors of [`factors_to_text`]'s text, checked; `None` if it is not such a text.
#[cfg(any(feature = "redis", feature = "postgres"))]
pub(crate) fn factors_from_text(text: &str) -> Option<Vec<Factor>> {
    let mut out = Vec::new();
    for part in text.split(';') {
        let mut f = part.split(' ');
        let (Some(m), Some(l), Some(at), None) = (f.next(), f.next(), f.next(), f.next()) else {
            return None;
        };
        check_method(m).ok()?;
        out.push(Factor::new(m, l.parse().ok()?, Timestamp(at.parse().ok()?)));
    }
    check_factors(&out).ok()?;
    Some(out)
}

/// Checks one method name (see [`SignIn`]).
pub(crate) fn check_method(m: &str) -> Result<()> {
    if m.is_empty() || m.len() > SignIn::MAX_METHOD_BYTES {
        return Err(Error::InvalidSignIn {
            reason: format!(
                "a method name is 1 to {} bytes, not {}",
                SignIn::MAX_METHOD_BYTES,
                m.len()
            ),
        });
    }
    if !m
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err(Error::InvalidSignIn {
            reason: format!("method {m:?} has a character other than A-Z a-z 0-9 - _ . :"),
        });
    }
    Ok(())
}

/// One way a session's user proved who they are: the method, the level the step that
/// used it reached, and when.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Factor {
    pub(crate) method: Arc<str>,
    pub(crate) level: u8,
    pub(crate) at: Timestamp,
}

impl Factor {
    /// A factor as stored (an import, a backend's record); checked by
    /// [`check_factors`].
    pub fn new(method: &str, level: u8, at: Timestamp) -> Factor {
        Factor {
            method: Arc::from(method),
            level,
            at,
        }
    }
    /// The method's name.
    pub fn method(&self) -> &str {
        &self.method
    }
    /// The level the step reached.
    pub fn level(&self) -> u8 {
        self.level
    }
    /// When.
    pub fn at(&self) -> Timestamp {
        self.at
    }
}

/// Checks a stored list of factors: at most [`SignIn::MAX_FACTORS`], distinct methods,
/// each well formed.
///
/// # Errors
/// [`Error::InvalidSignIn`].
pub(crate) fn check_factors(factors: &[Factor]) -> Result<()> {
    if factors.len() > SignIn::MAX_FACTORS {
        return Err(Error::InvalidSignIn {
            reason: format!(
                "{} methods, more than {}",
                factors.len(),
                SignIn::MAX_FACTORS
            ),
        });
    }
    for (i, f) in factors.iter().enumerate() {
        check_method(&f.method)?;
        if factors[..i].iter().any(|g| g.method == f.method) {
            return Err(Error::InvalidSignIn {
                reason: format!("method {:?} listed twice", &*f.method),
            });
        }
    }
    Ok(())
}

impl LevelLifetimes {
    /// Whether factor `f` still counts at `now`.
    pub(crate) fn counts(&self, f: &Factor, now: Timestamp) -> bool {
        self.of(f.level)
            .is_none_or(|ms| now.0 < f.at.0.saturating_add(ms))
    }

    /// The level `factors` give at `now`: the highest among those still within their
    /// level's lifetime, 0 if none.
    pub(crate) fn level(&self, factors: &[Factor], now: Timestamp) -> u8 {
        self.assess(factors, now).level
    }

    /// The level `factors` give at `now`, and which of them count.
    pub(crate) fn assess(&self, factors: &[Factor], now: Timestamp) -> Assessed {
        let mut a = Assessed::default();
        for (i, f) in factors.iter().enumerate().take(SignIn::MAX_FACTORS) {
            if self.counts(f, now) {
                a.level = a.level.max(f.level);
                a.counting |= 1 << i;
            }
        }
        a
    }
}

/// What [`LevelLifetimes::assess`] found: the level, and a bit per factor (by
/// position) that still counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Assessed {
    pub(crate) level: u8,
    pub(crate) counting: u8,
}

/// Which of a user's sessions [`crate::Store::revoke_user_where`] ends.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Criterion {
    /// Those that signed in or stepped up with this method (say, after it was found
    /// weak: every session that used a leaked recovery code).
    Method(String),
    /// Those whose level, at the call, is below this one (after a policy change
    /// requiring a second factor; a session signed in without [`SignIn`] is at 0).
    BelowLevel(u8),
}

impl Criterion {
    /// Checks the criterion's method name.
    ///
    /// # Errors
    /// [`Error::InvalidSignIn`].
    pub(crate) fn check(&self) -> Result<()> {
        match self {
            Criterion::Method(m) => check_method(m),
            Criterion::BelowLevel(_) => Ok(()),
        }
    }

    /// Whether a session with `factors` meets it at `now`.
    pub(crate) fn matches(&self, factors: &[Factor], now: Timestamp, l: &LevelLifetimes) -> bool {
        match self {
            Criterion::Method(m) => factors.iter().any(|f| *f.method == **m),
            Criterion::BelowLevel(level) => l.level(factors, now) < *level,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn method_names_are_bounded_and_plain() {
        assert!(SignIn::with("password").check().is_ok());
        assert!(SignIn::with("oidc:google").and("otp").check().is_ok());
        for bad in ["", "pass word", "pässword", "a\n", &"x".repeat(33)] {
            assert!(
                matches!(SignIn::with(bad).check(), Err(Error::InvalidSignIn { .. })),
                "{bad:?}"
            );
        }
        assert!(SignIn::with("otp").and("otp").check().is_err());
        let nine = (0..9).fold(SignIn::with("m"), |s, i| s.and(format!("m{i}")));
        assert!(nine.check().is_err());
    }

    #[test]
    fn a_step_replaces_its_methods_and_keeps_the_others() {
        let t = Timestamp;
        let first = SignIn::with("password").apply(&[], t(10)).unwrap();
        let second = SignIn::with("webauthn")
            .level(2)
            .apply(&first, t(20))
            .unwrap();
        assert_eq!(second.len(), 2);
        let again = SignIn::with("password").apply(&second, t(30)).unwrap();
        assert_eq!(again[0].method(), "webauthn");
        assert_eq!((again[1].method(), again[1].at()), ("password", t(30)));
        let full: Vec<Factor> = (0..8)
            .map(|i| Factor::new(&format!("m{i}"), 1, t(1)))
            .collect();
        assert!(SignIn::with("one-more").apply(&full, t(2)).is_err());
        assert_eq!(SignIn::with("m3").apply(&full, t(2)).unwrap().len(), 8);
    }

    #[test]
    fn a_level_past_its_lifetime_falls_back_to_the_next_one_that_counts() {
        let t = Timestamp;
        let l = LevelLifetimes::default().with(2, Duration::from_millis(100));
        let f = vec![
            Factor::new("password", 1, t(0)),
            Factor::new("otp", 2, t(50)),
        ];
        assert_eq!(l.level(&f, t(149)), 2);
        assert_eq!(l.level(&f, t(150)), 1);
        assert_eq!(l.level(&[], t(0)), 0);
        assert_eq!(LevelLifetimes::default().level(&f, t(u64::MAX)), 2);
        assert!(Criterion::BelowLevel(2).matches(&f, t(150), &l));
        assert!(!Criterion::BelowLevel(2).matches(&f, t(100), &l));
        assert!(Criterion::Method("otp".into()).matches(&f, t(0), &l));
        assert!(!Criterion::Method("sms".into()).matches(&f, t(0), &l));
    }
}
