//! What a device is, for the person looking at their devices: the browser and the
//! operating system named by the request's `User-Agent` ("Firefox 140", "Linux"), and a
//! short label made of both ("Firefox 140 on Linux").
//!
//! The parsing is [woothee](https://docs.rs/woothee)'s (Project Woothee's rules); this
//! module only picks what to show. A User-Agent is the client's word: what is made of it
//! is only ever displayed (escaped), never trusted, and bounded in length (a label
//! always fits the store's label limit).

use woothee::parser::{Parser, WootheeResult};
use woothee::woothee::VALUE_UNKNOWN;

/// Longest label or name this module produces, in characters (well under the store's
/// default 256-byte label limit even for 4-byte characters).
pub const MAX_LABEL_CHARS: usize = 60;

/// The browser and the system a User-Agent names, as shown on the devices page; `None`
/// where it names none the parser knows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Client {
    /// The browser (or other program) and its major version: "Chrome 156", "Safari
    /// 17", "HTTP Library (curl)".
    pub browser: Option<String>,
    /// The operating system: "Linux", "Android", "iPhone", "macOS", "Windows".
    pub system: Option<String>,
}

impl Client {
    /// What `user_agent` says (nothing for an empty one).
    pub fn parse(user_agent: &str) -> Client {
        match Parser::new().parse(user_agent.trim()) {
            Some(r) => Client {
                browser: browser(&r),
                system: system(r.os),
            },
            None => Client::default(),
        }
    }
}

/// The name and major version; a version that is not a number (the parser puts an HTTP
/// library's name there) in parentheses.
fn browser(r: &WootheeResult<'_>) -> Option<String> {
    let name = known(r.name)?;
    let name = match known(r.version) {
        None => name.to_owned(),
        Some(v) if v.starts_with(|c: char| c.is_ascii_digit()) => {
            let major = v.split('.').next().unwrap_or(v);
            format!("{name} {major}")
        }
        Some(v) => format!("{name} ({v})"),
    };
    Some(clip(&name))
}

/// The system's name, in today's words where the parser's are dated: a Mac is "macOS";
/// "Windows NT 10.0" is Windows 10 or 11 alike, so just "Windows".
fn system(os: &str) -> Option<String> {
    let os = known(os)?;
    Some(match os {
        "Mac OSX" => "macOS".to_owned(),
        "Windows 10" => "Windows".to_owned(),
        other => clip(other),
    })
}

/// `s` unless the parser did not know it.
fn known(s: &str) -> Option<&str> {
    (!s.is_empty() && s != VALUE_UNKNOWN).then_some(s)
}

/// The label for a request with this `User-Agent` header value (or none): "Firefox 140
/// on Linux", or the browser alone, or "A browser on Android"; for a User-Agent the
/// parser does not know, its first word (cut to [`MAX_LABEL_CHARS`] characters); for an
/// empty or missing one, "Unknown device".
pub fn label_from_user_agent(user_agent: Option<&str>) -> String {
    let ua = user_agent.map(str::trim).unwrap_or("");
    if ua.is_empty() {
        return "Unknown device".to_owned();
    }
    let label = match Client::parse(ua) {
        Client {
            browser: Some(b),
            system: Some(s),
        } => format!("{b} on {s}"),
        Client {
            browser: Some(b),
            system: None,
        } => b,
        Client {
            browser: None,
            system: Some(s),
        } => format!("A browser on {s}"),
        Client {
            browser: None,
            system: None,
        } => ua.split_whitespace().next().unwrap_or(ua).to_owned(),
    };
    clip(&label)
}

/// At most [`MAX_LABEL_CHARS`] characters, with no control characters.
fn clip(label: &str) -> String {
    let clean: String = label
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() <= MAX_LABEL_CHARS {
        return clean;
    }
    let mut cut: String = clean.chars().take(MAX_LABEL_CHARS - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_browsers_and_systems_get_short_names() {
        let cases = [
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36",
                "Chrome 156 on Linux",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:140.0) Gecko/20100101 Firefox/140.0",
                "Firefox 140 on Windows",
            ),
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
                "Safari 17 on macOS",
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
                "Safari 17 on iPhone",
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Mobile Safari/537.36",
                "Chrome 156 on Android",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36 Edg/156.0.0.0",
                "Edge 156 on Windows",
            ),
            (
                "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36",
                "Chrome 156 on ChromeOS",
            ),
            ("curl/8.5.0", "HTTP Library (curl)"),
        ];
        for (ua, want) in cases {
            assert_eq!(label_from_user_agent(Some(ua)), want, "for {ua}");
        }
        let c = Client::parse(
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
             HeadlessChrome/156.0.0.0 Safari/537.36",
        );
        assert_eq!(c.browser.as_deref(), Some("Chrome 156"));
        assert_eq!(c.system.as_deref(), Some("Linux"));
    }

    #[test]
    fn missing_empty_and_unknown_agents_still_get_a_bounded_label() {
        assert_eq!(label_from_user_agent(None), "Unknown device");
        assert_eq!(label_from_user_agent(Some("   ")), "Unknown device");
        assert_eq!(Client::parse(""), Client::default());
        assert_eq!(label_from_user_agent(Some("xyz/1.0 (+x)")), "xyz/1.0");
        assert_eq!(
            label_from_user_agent(Some("Mozilla/5.0 (Linux; Android 14; Pixel 8) Mobile")),
            "A browser on Android"
        );
        let long = "x".repeat(10_000);
        let label = label_from_user_agent(Some(&long));
        assert_eq!(label.chars().count(), MAX_LABEL_CHARS);
        assert!(label.ends_with('…'));
        assert!(label.len() <= 256, "fits the store's default label limit");
        let ctl = label_from_user_agent(Some("a\u{7}b"));
        assert!(!ctl.chars().any(char::is_control), "{ctl:?}");
    }
}
