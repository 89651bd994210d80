//! [`EventBus`]: the non-blocking fan-out of [`Event`]s to subscribers.
//!
//! Every subscriber gets its own bounded crossbeam channel. The engine only ever
//! `try_send`s, after releasing its locks: a full channel drops the event (counted in
//! [`crate::Stats::events_dropped`]) and a dropped receiver is unsubscribed, so a slow
//! or vanished subscriber never blocks a write.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::RwLock;

use crate::model::event::Event;

/// Fan-out of events to subscribers.
pub(crate) struct EventBus {
    subscribers: RwLock<Vec<Sender<Event>>>,
    /// Set while there is at least one subscriber, so the hot path can skip building
    /// events nobody will read.
    active: AtomicBool,
    dropped: AtomicU64,
    capacity: usize,
}

impl EventBus {
    pub(crate) fn new(capacity: usize) -> EventBus {
        EventBus {
            subscribers: RwLock::new(Vec::new()),
            active: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            capacity,
        }
    }

    pub(crate) fn subscribe(&self) -> Receiver<Event> {
        let (tx, rx) = crossbeam_channel::bounded(self.capacity);
        let mut subs = self.subscribers.write();
        subs.push(tx);
        self.active.store(true, Ordering::Release);
        rx
    }

    /// Whether anyone listens; callers skip building events when not.
    pub(crate) fn active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// This bus's identity for a deferral scope.
    pub(crate) fn key(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// Delivers `events` to every subscriber, without blocking (the engine holds them
    /// back first inside [`crate::Store::deferred`]). Call with no lock held.
    pub(crate) fn deliver(&self, events: Vec<Event>) {
        if events.is_empty() || !self.active() {
            return;
        }
        let mut gone: Vec<Sender<Event>> = Vec::new();
        {
            let subs = self.subscribers.read();
            for ev in events {
                for tx in subs.iter() {
                    match tx.try_send(ev.clone()) {
                        Ok(()) => {}
                        Err(TrySendError::Full(_)) => {
                            self.dropped.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(TrySendError::Disconnected(_)) => {
                            if !gone.iter().any(|g| g.same_channel(tx)) {
                                gone.push(tx.clone());
                            }
                        }
                    }
                }
            }
        }
        if !gone.is_empty() {
            let mut subs = self.subscribers.write();
            subs.retain(|tx| !gone.iter().any(|g| g.same_channel(tx)));
            self.active.store(!subs.is_empty(), Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::token::SessionId;

    #[test]
    fn full_subscriber_drops_events_instead_of_blocking() {
        let bus = EventBus::new(2);
        let rx = bus.subscribe();
        let evs: Vec<Event> = (0..5)
            .map(|i| Event::Rotated {
                session: SessionId(i),
            })
            .collect();
        bus.deliver(evs);
        assert_eq!(rx.len(), 2);
        assert_eq!(bus.dropped(), 3);
    }

    #[test]
    fn dropped_subscriber_is_removed() {
        let bus = EventBus::new(8);
        let rx = bus.subscribe();
        drop(rx);
        assert!(bus.active());
        bus.deliver(vec![Event::Rotated {
            session: SessionId(1),
        }]);
        assert!(!bus.active());
    }
}
