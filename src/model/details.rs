//! What a session says about itself besides its data: its label, how it signed in
//! ([`Factor`]s) and what device it is ([`DeviceInfo`]) — one shared allocation,
//! absent for the visitors that have none of these, so that an anonymous flood pays
//! one pointer per session for all three.

use std::sync::Arc;

use crate::model::device::DeviceInfo;
use crate::model::signin::Factor;

/// A session's label, sign-in factors and device. Never all empty: a session with
/// none holds no `Details` at all ([`Details::shared`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Details {
    pub(crate) label: Option<Arc<str>>,
    /// Boxed slices, not a vector and an inline device: one allocation per session
    /// that has them, as small as it can be (the label is what most have).
    pub(crate) factors: Box<[Factor]>,
    pub(crate) device: Option<Box<DeviceInfo>>,
}

impl Details {
    /// Whether it holds nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.label.is_none() && self.factors.is_empty() && self.device.is_none()
    }

    /// `self` shared, or `None` if it holds nothing.
    pub(crate) fn shared(self) -> Option<Arc<Details>> {
        (!self.is_empty()).then(|| Arc::new(self))
    }

    /// `d` with `f` applied to a copy of its details (or empty ones).
    pub(crate) fn edit(
        d: &Option<Arc<Details>>,
        f: impl FnOnce(&mut Details),
    ) -> Option<Arc<Details>> {
        let mut copy = d.as_deref().cloned().unwrap_or_default();
        f(&mut copy);
        copy.shared()
    }

    /// Only a label.
    pub(crate) fn labelled(label: Option<Arc<str>>) -> Option<Arc<Details>> {
        Details {
            label,
            ..Details::default()
        }
        .shared()
    }
}

/// The label of optional details.
pub(crate) fn label_of(d: &Option<Arc<Details>>) -> Option<&Arc<str>> {
    d.as_deref().and_then(|d| d.label.as_ref())
}

/// The factors of optional details.
pub(crate) fn factors_of(d: &Option<Arc<Details>>) -> &[Factor] {
    d.as_deref().map_or(&[], |d| &d.factors)
}

/// The device of optional details.
pub(crate) fn device_of(d: &Option<Arc<Details>>) -> Option<&DeviceInfo> {
    d.as_deref().and_then(|d| d.device.as_deref())
}
