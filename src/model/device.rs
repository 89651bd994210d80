//! What each device is: the [`Device`] an app reports from a request (user agent,
//! client address), the privacy rule applied to the address before it is stored
//! ([`AddressPrivacy`]), and the bounded form a session keeps ([`DeviceInfo`]).

use std::net::IpAddr;
use std::sync::Arc;

use crate::clock::Timestamp;
use crate::options::AddressPrivacy;

/// The client of a request, as the app reports it to [`crate::NewSession::device`] or
/// [`crate::Store::seen_from`]: its `User-Agent` header and its address.
///
/// Both are the client's word (a header anyone can set, an address a proxy may
/// rewrite): show them to the user, never decide on them. The user agent is kept up
/// to [`Device::MAX_USER_AGENT_BYTES`] (cut at a character boundary), control
/// characters dropped; the address as [`crate::Options::address_privacy`] says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Device {
    pub(crate) user_agent: Option<String>,
    pub(crate) address: Option<IpAddr>,
}

impl Device {
    /// Longest user agent kept, in bytes.
    pub const MAX_USER_AGENT_BYTES: usize = 512;

    /// Nothing known yet.
    pub fn new() -> Device {
        Device::default()
    }

    /// The client's `User-Agent` header.
    pub fn user_agent(mut self, ua: impl Into<String>) -> Device {
        self.user_agent = Some(ua.into());
        self
    }

    /// The client's address.
    pub fn address(mut self, addr: IpAddr) -> Device {
        self.address = Some(addr);
        self
    }

    /// What a session whose device is `current` should record of this one at `now`
    /// (`None`: nothing): what it keeps under `privacy`, if that differs from
    /// `current` and `current` was recorded at least `touch_ms` before `now` — the rule
    /// of [`crate::Store::seen_from`] on every backend.
    pub(crate) fn due(
        &self,
        current: Option<&DeviceInfo>,
        now: Timestamp,
        privacy: AddressPrivacy,
        touch_ms: u64,
    ) -> Option<DeviceInfo> {
        let new = self.stored(privacy, now)?;
        match current {
            Some(c) if c.same_as(&new) => None,
            Some(c) if now.0.saturating_sub(c.at.0) < touch_ms => None,
            _ => Some(new),
        }
    }

    /// What a session keeps of it at `at`, under `privacy`; `None` if nothing is left.
    pub(crate) fn stored(&self, privacy: AddressPrivacy, at: Timestamp) -> Option<DeviceInfo> {
        let user_agent = self.user_agent.as_deref().and_then(clean_user_agent);
        let address = self.address.and_then(|a| privacy.apply(a));
        (user_agent.is_some() || address.is_some()).then_some(DeviceInfo {
            user_agent,
            address,
            at,
        })
    }
}

/// A user agent as kept: control characters dropped, cut to
/// [`Device::MAX_USER_AGENT_BYTES`] at a character boundary, surrounding spaces
/// trimmed; `None` if nothing is left.
pub(crate) fn clean_user_agent(ua: &str) -> Option<Arc<str>> {
    let mut s = String::with_capacity(ua.len().min(Device::MAX_USER_AGENT_BYTES));
    for c in ua.chars().filter(|c| !c.is_control()) {
        if s.len() + c.len_utf8() > Device::MAX_USER_AGENT_BYTES {
            break;
        }
        s.push(c);
    }
    let s = s.trim();
    (!s.is_empty()).then(|| Arc::from(s))
}

/// The device a session keeps: its last reported user agent and address (as
/// stored), and when they were recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DeviceInfo {
    pub(crate) user_agent: Option<Arc<str>>,
    pub(crate) address: Option<IpAddr>,
    pub(crate) at: Timestamp,
}

impl DeviceInfo {
    /// Whether `other` says the same of the device (ignoring when).
    pub(crate) fn same_as(&self, other: &DeviceInfo) -> bool {
        self.user_agent == other.user_agent && self.address == other.address
    }

    /// Checks a stored device: a user agent as [`clean_user_agent`] leaves one.
    pub(crate) fn check(&self) -> Result<(), String> {
        if let Some(ua) = &self.user_agent
            && clean_user_agent(ua).as_deref() != Some(&**ua)
        {
            return Err("a stored user agent is not as sessiondb keeps one".into());
        }
        if self.user_agent.is_none() && self.address.is_none() {
            return Err("a stored device with neither user agent nor address".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_are_truncated_to_their_network_by_default() {
        let t = AddressPrivacy::default();
        assert_eq!(t.apply(ip("203.0.113.77")), Some(ip("203.0.113.0")));
        assert_eq!(
            t.apply(ip("2001:db8:85a3:8d3:1319:8a2e:370:7348")),
            Some(ip("2001:db8:85a3::"))
        );
        assert_eq!(t.apply(ip("::ffff:198.51.100.9")), Some(ip("198.51.100.0")));
        assert_eq!(
            AddressPrivacy::Full.apply(ip("203.0.113.77")),
            Some(ip("203.0.113.77"))
        );
        assert_eq!(AddressPrivacy::Omit.apply(ip("203.0.113.77")), None);
    }

    #[test]
    fn user_agents_are_bounded_and_cleaned() {
        assert_eq!(clean_user_agent("  \t\r\n "), None);
        assert_eq!(clean_user_agent("a\u{0}b\nc").as_deref(), Some("abc"));
        let long = "é".repeat(400);
        let kept = clean_user_agent(&long).unwrap();
        assert!(kept.len() <= Device::MAX_USER_AGENT_BYTES && kept.len() == 512);
        let odd = format!("x{}", "é".repeat(400));
        assert_eq!(clean_user_agent(&odd).unwrap().len(), 511);
        let d = Device::new()
            .user_agent("Firefox")
            .stored(AddressPrivacy::Omit, Timestamp(5))
            .unwrap();
        assert_eq!(d.address, None);
        assert!(d.check().is_ok());
        assert!(
            Device::new()
                .stored(AddressPrivacy::Full, Timestamp(0))
                .is_none()
        );
    }
}
