//! Device labels: a short, human name for a session ("Firefox 140 on Windows") made
//! from the request's `User-Agent`, shown on the devices page.
//!
//! A label is a hint for the person looking at their devices, not an identity: the
//! client chooses its User-Agent. It is therefore only ever displayed (escaped), never
//! trusted, and bounded in length so it always fits the store's label limit.

/// Longest label this module produces, in characters (well under the store's default
/// 256-byte label limit even for 4-byte characters).
pub const MAX_LABEL_CHARS: usize = 60;

/// The label for a request with this `User-Agent` header value (or none).
///
/// Recognises the common browsers and systems; anything else is shown as the first
/// word of the User-Agent, cut to [`MAX_LABEL_CHARS`] characters, and an empty or
/// missing one as "Unknown device".
pub fn label_from_user_agent(user_agent: Option<&str>) -> String {
    let ua = user_agent.map(str::trim).unwrap_or("");
    if ua.is_empty() {
        return "Unknown device".to_owned();
    }
    let label = match (browser(ua), system(ua)) {
        (Some(b), Some(s)) => format!("{b} on {s}"),
        (Some(b), None) => b,
        (None, Some(s)) => format!("A browser on {s}"),
        (None, None) => ua.split_whitespace().next().unwrap_or(ua).to_owned(),
    };
    clip(&label)
}

/// The browser and its major version. Order matters: Edge and Opera also say
/// "Chrome", Chrome also says "Safari".
fn browser(ua: &str) -> Option<String> {
    const KNOWN: [(&str, &str); 8] = [
        ("Edg/", "Edge"),
        ("OPR/", "Opera"),
        ("Firefox/", "Firefox"),
        ("HeadlessChrome/", "Headless Chrome"),
        ("Chromium/", "Chromium"),
        ("Chrome/", "Chrome"),
        ("curl/", "curl"),
        ("Version/", "Safari"),
    ];
    for (marker, name) in KNOWN {
        if let Some(version) = version_after(ua, marker) {
            if name == "Safari" && !ua.contains("Safari/") {
                continue;
            }
            return Some(match version {
                Some(v) => format!("{name} {v}"),
                None => name.to_owned(),
            });
        }
    }
    None
}

/// `Some(Some(major))` if `marker` occurs followed by a version, `Some(None)` if it
/// occurs without one, `None` if it does not occur.
fn version_after(ua: &str, marker: &str) -> Option<Option<String>> {
    let at = ua.find(marker)? + marker.len();
    let major: String = ua[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .take(6)
        .collect();
    Some((!major.is_empty()).then_some(major))
}

/// The operating system, most specific first (Android is also Linux, iOS also "like
/// Mac OS X").
fn system(ua: &str) -> Option<&'static str> {
    const KNOWN: [(&str, &str); 8] = [
        ("Android", "Android"),
        ("iPhone", "iPhone"),
        ("iPad", "iPad"),
        ("CrOS", "ChromeOS"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("Macintosh", "macOS"),
        ("Linux", "Linux"),
    ];
    KNOWN
        .iter()
        .find(|(marker, _)| ua.contains(marker))
        .map(|&(_, name)| name)
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
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36",
                "Headless Chrome 156 on Linux",
            ),
            ("curl/8.5.0", "curl 8"),
        ];
        for (ua, want) in cases {
            assert_eq!(label_from_user_agent(Some(ua)), want, "for {ua}");
        }
    }

    #[test]
    fn missing_empty_and_unknown_agents_still_get_a_bounded_label() {
        assert_eq!(label_from_user_agent(None), "Unknown device");
        assert_eq!(label_from_user_agent(Some("   ")), "Unknown device");
        assert_eq!(label_from_user_agent(Some("my-bot/1.0 (+x)")), "my-bot/1.0");
        let long = "x".repeat(10_000);
        let label = label_from_user_agent(Some(&long));
        assert_eq!(label.chars().count(), MAX_LABEL_CHARS);
        assert!(label.ends_with('…'));
        assert!(label.len() <= 256, "fits the store's default label limit");
        let ctl = label_from_user_agent(Some("a\u{7}b"));
        assert!(!ctl.chars().any(char::is_control), "{ctl:?}");
    }
}
