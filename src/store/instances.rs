//! Instances: tabs or windows inside one session (doors' model). Not durable: they
//! live in a per-shard side map and end with their session.

use super::Store;
use crate::error::{Error, Result};
use crate::model::change::Change;
use crate::model::event::{EndReason, Event};
use crate::model::token::{InstanceId, Token};

impl Store {
    /// Opens an instance (a tab or window) inside the session and returns its id.
    /// Instances are not durable.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live.
    pub fn open_instance(&self, token: &Token) -> Result<InstanceId> {
        let inner = &*self.inner;
        inner.with_live(token.hash().0, |shard, key, now| {
            let s = shard.live(key).ok_or(Error::Ended)?;
            // Opening a tab is activity: recorded as a (coalesced) touch.
            let id = s.id;
            let _coalesced = inner.journal.append(|| Change::Touch { id, at: now })?;
            s.mark_seen(now);
            let inst = shard.instances.entry(key).or_default();
            let id = InstanceId(inst.next);
            inst.next = inst.next.wrapping_add(1);
            inst.open.push(id);
            Ok(Some(id))
        })
    }

    /// The open instances of the session.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live.
    pub fn instances(&self, token: &Token) -> Result<Vec<InstanceId>> {
        self.inner.with_live(token.hash().0, |shard, key, _| {
            Ok(Some(
                shard
                    .instances
                    .get(&key)
                    .map(|i| i.open.clone())
                    .unwrap_or_default(),
            ))
        })
    }

    /// Ends one instance, keeping the session and its other instances. If the session's
    /// idle timeout is disabled and this was its last instance, the session ends too.
    /// Returns false if there was no such instance.
    ///
    /// # Errors
    /// [`Error::Ended`] if the session is not live.
    pub fn end_instance(&self, token: &Token, instance: InstanceId) -> Result<bool> {
        let inner = &*self.inner;
        let (id, found, ended) = inner.with_live(token.hash().0, |shard, key, _| {
            let (id, idle_ms) = match shard.live(key) {
                Some(s) => (s.id, s.idle_ms),
                None => return Err(Error::Ended),
            };
            let Some(inst) = shard.instances.get_mut(&key) else {
                return Ok(Some((id, false, None)));
            };
            let Some(pos) = inst.open.iter().position(|i| *i == instance) else {
                return Ok(Some((id, false, None)));
            };
            inst.open.remove(pos);
            if !inst.open.is_empty() || idle_ms != 0 {
                return Ok(Some((id, true, None)));
            }
            let t = inner.journal.append(|| Change::End {
                id,
                reason: EndReason::LastInstanceEnded,
            })?;
            let Some(state) = shard.remove_live(key, id) else {
                return Err(Error::Ended);
            };
            shard.tally.end(EndReason::LastInstanceEnded);
            inner.ids_remove(id);
            Ok(Some((id, true, Some((state, t)))))
        })?;
        if found {
            inner.emit_if(|| {
                vec![Event::InstanceEnded {
                    session: id,
                    instance,
                }]
            });
        }
        if let Some((state, ticket)) = ended {
            inner.finish_end(&state, ticket, EndReason::LastInstanceEnded)?;
        }
        Ok(found)
    }
}
