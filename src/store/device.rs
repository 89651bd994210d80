//! What each device is: [`Store::seen_from`] records a session's client (user agent,
//! address) when it changes, at most once per touch interval.

use super::Store;
use crate::clock::Timestamp;
use crate::error::{Error, Result};
use crate::model::change::Change;
use crate::model::device::{Device, DeviceInfo};
use crate::model::session::Session;
use crate::model::token::Token;

impl Store {
    /// Records the client a request for this session came from, for the devices
    /// page: call it on every request with what the request says. It writes only when
    /// the user agent or the (privacy-truncated) address differs from what the
    /// session has, and at most once per [`crate::Options::touch_interval`] — a
    /// phone moving between networks costs a log record a minute, not one per
    /// request; an unchanged device costs a read. Returns whether it wrote.
    ///
    /// A device with neither a user agent nor an address kept (an empty header, an
    /// address under [`crate::AddressPrivacy::Omit`]) records nothing.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live.
    pub fn seen_from(&self, token: &Token, device: &Device) -> Result<bool> {
        let inner = &*self.inner;
        let privacy = inner.opts.address_privacy;
        let due = |current: Option<&DeviceInfo>, now: Timestamp| {
            device.due(current, now, privacy, inner.touch_ms)
        };
        let hash = token.hash().0;
        let wanted = inner
            .read_live(hash, |s, now| due(s.device(), now).is_some())
            .ok_or(Error::Ended)?;
        if !wanted {
            return Ok(false);
        }
        let ticket = inner.with_live(hash, |shard, key, now| {
            let mut s = shard.live_mut(key).ok_or(Error::Ended)?;
            let Some(new) = due(s.device(), now) else {
                return Ok(Some(None));
            };
            let id = s.id;
            let t = inner.journal.append(|| Change::Device {
                id,
                device: new.clone(),
            })?;
            s.set_device(new);
            Ok(Some(Some(t)))
        })?;
        match ticket {
            Some(t) => inner.wait(t).map(|()| true),
            None => Ok(false),
        }
    }

    /// [`Store::seen_from`] for a request that has already read its session
    /// (`session`, from [`Store::get`]): nothing is done, not even a lookup, when that
    /// snapshot says there is nothing to record. What [`crate::RedisStore`] saves with
    /// it is a round trip per request.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live (when there is something to record).
    pub fn seen_from_if_changed(
        &self,
        token: &Token,
        session: &Session,
        device: &Device,
    ) -> Result<bool> {
        if !session.device_due(device, &self.inner.opts) {
            return Ok(false);
        }
        self.seen_from(token, device)
    }
}
