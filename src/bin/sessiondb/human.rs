//! Text for people: durations in and out, times relative to now, previews of stored
//! values, aligned tables, URLs without their passwords.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use indicatif::HumanDuration;
use sessiondb::Timestamp;

/// Parses a duration such as `90d`, `12h`, `1h30m`, `45s` or `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration like 90d, 12h, 1h30m, 45s or 500ms");
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let ms_per = match &rest[..unit] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit..];
        let ms = n.checked_mul(ms_per).ok_or_else(bad)?;
        total = total
            .checked_add(Duration::from_millis(ms))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

/// Parses a time: `now`, milliseconds since the Unix epoch, or RFC 3339 in UTC as
/// `list` and `show` print it (`2026-12-06T23:59:00Z`, seconds' fraction optional).
pub fn parse_time(s: &str) -> Result<Timestamp, String> {
    let bad = || {
        format!(
            "{s:?} is not a time: give `now`, milliseconds since 1970, or UTC like \
             2026-12-06T23:59:00Z"
        )
    };
    let s = s.trim();
    if s == "now" {
        return Ok(Timestamp(now_ms()));
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map(Timestamp).map_err(|_| bad());
    }
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Result<u64, String> {
        let part = b.get(r).ok_or_else(bad)?;
        if part.iter().all(u8::is_ascii_digit) {
            Ok(part.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0')))
        } else {
            Err(bad())
        }
    };
    let shape = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if b.len() < 20
        || b.last() != Some(&b'Z')
        || shape.iter().any(|&(i, c)| !b[i].eq_ignore_ascii_case(&c))
    {
        return Err(bad());
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let ms = match &b[19..b.len() - 1] {
        [] => 0,
        [b'.', frac @ ..] if (1..=9).contains(&frac.len()) => {
            let three: Vec<u8> = frac.iter().copied().chain([b'0'; 3]).take(3).collect();
            if !frac.iter().all(u8::is_ascii_digit) {
                return Err(bad());
            }
            three.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0'))
        }
        _ => return Err(bad()),
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if y < 1970
        || !(1..=12).contains(&mo)
        || d == 0
        || d > month_days[(mo - 1) as usize]
        || h > 23
        || mi > 59
        || sec > 59
    {
        return Err(bad());
    }
    // Days from 1970-01-01 to the date (H. Hinnant's days-from-civil).
    let (y, mo, d) = (y as i64, mo as i64, d as i64);
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((mo + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs = days as u64 * 86_400 + h * 3600 + mi * 60 + sec;
    Ok(Timestamp(secs * 1000 + ms))
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `ts` in RFC 3339, with how long ago or ahead of now it is.
pub fn when(ts: Timestamp) -> String {
    if ts == Timestamp::MAX {
        return "never".into();
    }
    let now = now_ms();
    let rel = if ts.as_millis() >= now {
        format!(
            "in {}",
            HumanDuration(Duration::from_millis(ts.as_millis() - now))
        )
    } else {
        format!(
            "{} ago",
            HumanDuration(Duration::from_millis(now - ts.as_millis()))
        )
    };
    format!("{ts} ({rel})")
}

/// A short, safe-to-print rendering of a stored value: the string a bincode-encoded
/// `String` holds, printable raw text, or the leading bytes in hex.
pub fn preview(bytes: &[u8]) -> String {
    const MAX_CHARS: usize = 60;
    let text = |s: &str| {
        let mut out: String = s.chars().take(MAX_CHARS).collect();
        if s.chars().count() > MAX_CHARS {
            out.push('…');
        }
        format!("{out:?}")
    };
    let printable = |s: &str| s.chars().all(|c| !c.is_control() || c == '\n' || c == '\t');
    if bytes.len() >= 8 {
        let (len, rest) = bytes.split_at(8);
        let len = u64::from_le_bytes(len.try_into().unwrap_or([0xff; 8]));
        if usize::try_from(len).is_ok_and(|n| n == rest.len())
            && let Ok(s) = std::str::from_utf8(rest)
            && printable(s)
        {
            return format!("{} (a bincode string)", text(s));
        }
    }
    if let Ok(s) = std::str::from_utf8(bytes)
        && !s.is_empty()
        && printable(s)
    {
        return format!("{} (raw text)", text(s));
    }
    let shown: Vec<String> = bytes.iter().take(24).map(|b| format!("{b:02x}")).collect();
    let more = if bytes.len() > 24 { " …" } else { "" };
    format!("[{}{more}]", shown.join(" "))
}

/// Rows aligned in columns under a header, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i + 1 == widths.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = line(&mut header.iter().copied());
    for row in rows {
        out.push('\n');
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// `url` with any password (in the authority, or a `pass=`/`password=` query
/// parameter, or the `password` of a PostgreSQL key=value connection string) replaced
/// by `***`, for messages and `stats`.
pub fn redact(url: &str) -> String {
    if !url.contains("://") {
        return redact_keywords(url);
    }
    let (url, query) = match url.split_once('?') {
        Some((u, q)) => {
            let params: Vec<String> = q
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some(("pass" | "password", _)) => {
                        format!("{}=***", &p[..p.find('=').unwrap_or(p.len())])
                    }
                    _ => p.to_owned(),
                })
                .collect();
            (u, format!("?{}", params.join("&")))
        }
        None => (url, String::new()),
    };
    format!("{}{query}", redact_authority(url))
}

fn redact_authority(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (auth_end, host_start) = match rest.rfind('@') {
        // Only an '@' before the path belongs to the authority.
        Some(at) if !rest[..at].contains('/') => (at, at + 1),
        _ => return url.to_owned(),
    };
    let user = rest[..auth_end]
        .split_once(':')
        .map_or(&rest[..auth_end], |(u, _)| u);
    let shown_user = if rest[..auth_end].contains(':') {
        format!("{user}:***")
    } else if scheme.starts_with("postgres") {
        // postgres://app@host: a lone field is the user.
        user.to_owned()
    } else {
        // redis://secret@host: a lone field is the password.
        "***".to_owned()
    };
    format!("{scheme}://{shown_user}@{}", &rest[host_start..])
}

/// A PostgreSQL key=value connection string (`host=db user=app password=s3cret`) with
/// the password's value, bare or quoted, replaced by `***`; the rest as it is.
fn redact_keywords(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    // Moves the first `n` bytes of `rest` to `out` (or drops them, for a password).
    let take = |out: &mut String, rest: &mut &str, n: usize, keep: bool| {
        if keep {
            out.push_str(&rest[..n]);
        }
        *rest = &rest[n..];
    };
    let spaces = |r: &str| r.len() - r.trim_start().len();
    loop {
        let n = spaces(rest);
        take(&mut out, &mut rest, n, true);
        if rest.is_empty() {
            return out;
        }
        let key_len = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let key = &rest[..key_len];
        take(&mut out, &mut rest, key_len, true);
        let before_eq = spaces(rest);
        if !rest[before_eq..].starts_with('=') {
            continue;
        }
        take(&mut out, &mut rest, before_eq + 1, true);
        let n = spaces(rest);
        take(&mut out, &mut rest, n, true);
        let value_len = if rest.starts_with('\'') {
            // A quoted value: up to the closing quote; a backslash escapes a character.
            let mut escaped = false;
            rest.char_indices()
                .skip(1)
                .find(|&(_, c)| {
                    let end = c == '\'' && !escaped;
                    escaped = c == '\\' && !escaped;
                    end
                })
                .map_or(rest.len(), |(i, _)| i + 1)
        } else {
            rest.find(char::is_whitespace).unwrap_or(rest.len())
        };
        let secret = key == "password";
        take(&mut out, &mut rest, value_len, !secret);
        if secret {
            out.push_str("***");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_reads_back_as_timestamp_prints_it() {
        for ms in [
            0u64,
            951_782_400_000, // 2000-02-29
            1_800_000_000_123,
            4_102_444_799_999, // 2099-12-31T23:59:59.999Z
            253_402_300_799_000,
        ] {
            let t = Timestamp(ms);
            assert_eq!(parse_time(&t.to_string()), Ok(t), "{t}");
        }
        assert_eq!(
            parse_time("2026-12-06T23:59:00Z"),
            Ok(Timestamp(1_796_601_540_000))
        );
        assert_eq!(
            parse_time("2026-12-06T23:59:00.5Z"),
            Ok(Timestamp(1_796_601_540_500))
        );
        assert_eq!(
            parse_time("1800000000000"),
            Ok(Timestamp(1_800_000_000_000))
        );
        assert!(parse_time("now").unwrap().as_millis() > 1_700_000_000_000);
        for bad in [
            "",
            "yesterday",
            "2026-12-06",
            "2026-12-06T23:59:00",
            "2026-12-06T23:59:00+01:00",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-12-06T24:00:00Z",
            "1969-12-31T23:59:59Z",
            "2026-12-06T23:59:00.Z",
            "2026-12-06T23:59:00.1234567890Z",
            "2026-12-06T23:59:0xZ",
            "99999999999999999999999",
            "-5",
        ] {
            assert!(parse_time(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn durations_parse_in_units_and_combinations_and_bad_ones_are_refused() {
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        for bad in ["", "10", "h", "5 d", "3w", "99999999999999999999d", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn previews_show_bincode_strings_raw_text_and_hex() {
        let mut bincode_str = 5u64.to_le_bytes().to_vec();
        bincode_str.extend_from_slice(b"hello");
        assert_eq!(preview(&bincode_str), "\"hello\" (a bincode string)");
        assert_eq!(preview(b"dark"), "\"dark\" (raw text)");
        assert_eq!(preview(&[42, 0, 0, 0]), "[2a 00 00 00]");
        assert!(preview(&[0u8; 30]).ends_with(" …]"));
    }

    #[test]
    fn tables_align_columns_and_trim_line_ends() {
        let t = table(
            &["A", "BB"],
            &[
                vec!["xxx".into(), "y".into()],
                vec!["z".into(), String::new()],
            ],
        );
        assert_eq!(t, "A    BB\nxxx  y\nz");
    }

    #[test]
    fn passwords_in_urls_are_hidden_and_the_rest_kept() {
        assert_eq!(redact("redis://127.0.0.1:6379/"), "redis://127.0.0.1:6379/");
        assert_eq!(
            redact("redis://app:s3cret@db:6379/2"),
            "redis://app:***@db:6379/2"
        );
        assert_eq!(redact("rediss://:s3cret@db/"), "rediss://:***@db/");
        assert_eq!(redact("redis://s3cret@db/"), "redis://***@db/");
        assert_eq!(
            redact("redis+unix:///run/redis.sock"),
            "redis+unix:///run/redis.sock"
        );
        assert_eq!(
            redact("redis+unix:///run/redis.sock?db=1&pass=s3cret"),
            "redis+unix:///run/redis.sock?db=1&pass=***"
        );
        assert_eq!(redact("not a url"), "not a url");
    }

    #[test]
    fn postgres_passwords_are_hidden_and_its_user_kept() {
        for (given, shown) in [
            (
                "postgres://app@127.0.0.1:5432/app",
                "postgres://app@127.0.0.1:5432/app",
            ),
            (
                "postgresql://app:s3cret@db/app?sslmode=disable",
                "postgresql://app:***@db/app?sslmode=disable",
            ),
            (
                "postgres://db/app?user=app&password=s3cret",
                "postgres://db/app?user=app&password=***",
            ),
            (
                "host=db user=app password=s3cret dbname=app",
                "host=db user=app password=*** dbname=app",
            ),
            (
                "host=db password = 's3 \\'cret' dbname=app",
                "host=db password = *** dbname=app",
            ),
            ("password=s3cret", "password=***"),
            ("host=db passwordless=x", "host=db passwordless=x"),
            ("host=db password='unterminated", "host=db password=***"),
        ] {
            assert_eq!(redact(given), shown, "{given}");
        }
    }
}
