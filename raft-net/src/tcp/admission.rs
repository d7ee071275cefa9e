//! Which accepted connections may attempt a handshake: at most a few at once per remote
//! address, and never all of the inbound slots for addresses that are not known peers'.
//!
//! A connection that sends nothing holds its slot for the whole handshake limit. Without these
//! rules, a few dozen such connections from one host, reopened as soon as they close, keep a
//! real peer from ever getting a slot. With them, one address holds at most
//! `max_handshakes_per_address` slots, and all unknown addresses together at most half of
//! `max_inbound_connections`: the other half stays free for the addresses of known peers
//! (configured addresses that are IP literals, and every address a handshake succeeded from).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The admission state of one transport's listener.
#[derive(Debug)]
pub(crate) struct Admission {
    state: Mutex<State>,
    max_per_address: usize,
    max_unknown: usize,
}

#[derive(Debug, Default)]
struct State {
    /// Handshakes in progress per remote address. Invariant: no zero counts are kept.
    pending: BTreeMap<IpAddr, usize>,
    /// Connections (in handshake or established) from addresses not known when they arrived.
    /// Invariant: `unknown <= max_unknown`.
    unknown: usize,
    /// Addresses of known peers. Grows only: by configured peers and successful handshakes,
    /// both of which only configured peers can cause.
    known: BTreeSet<IpAddr>,
}

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Its address has `max_handshakes_per_address` handshakes in progress already.
    AddressBusy,
    /// Unknown addresses hold their whole share of the inbound slots.
    UnknownFull,
}

impl Refusal {
    pub(crate) fn cause(self) -> &'static str {
        match self {
            Refusal::AddressBusy => "too many handshakes from one address",
            Refusal::UnknownFull => "inbound slots for unknown addresses full",
        }
    }
}

impl Admission {
    pub(crate) fn new(max_per_address: usize, max_inbound_connections: usize) -> Admission {
        Admission {
            state: Mutex::new(State::default()),
            max_per_address: max_per_address.max(1),
            max_unknown: (max_inbound_connections / 2).max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a handful of map operations that cannot panic halfway.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `address` as a known peer's.
    pub(crate) fn learn(&self, address: IpAddr) {
        self.lock().known.insert(address);
    }

    /// Admits a connection from `address` to its handshake, or says why not. The ticket
    /// gives the handshake slot back when the handshake ends ([`Ticket::handshake_done`]) or
    /// the ticket is dropped.
    pub(crate) fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Ticket, Refusal> {
        let mut state = self.lock();
        let known = state.known.contains(&address);
        let pending = state.pending.get(&address).copied().unwrap_or(0);
        // Known addresses are bounded by the overall connection cap alone: several peers may
        // share a host, and their handshakes are short.
        if !known && pending >= self.max_per_address {
            return Err(Refusal::AddressBusy);
        }
        if !known && state.unknown >= self.max_unknown {
            return Err(Refusal::UnknownFull);
        }
        *state.pending.entry(address).or_insert(0) += 1;
        if !known {
            state.unknown += 1;
        }
        Ok(Ticket {
            admission: Arc::clone(self),
            address,
            unknown: !known,
            pending: true,
        })
    }
}

/// A connection's claim on the admission limits; released when dropped.
#[derive(Debug)]
pub(crate) struct Ticket {
    admission: Arc<Admission>,
    address: IpAddr,
    /// Counted in `State::unknown` until dropped.
    unknown: bool,
    /// Counted in `State::pending` until the handshake ends.
    pending: bool,
}

impl Ticket {
    /// The handshake ended: the address may start another. An accepted peer's address is
    /// learnt, and its connection no longer counts against the unknown addresses' share.
    pub(crate) fn handshake_done(&mut self, accepted: bool) {
        let mut state = self.admission.lock();
        if self.pending {
            release_pending(&mut state, self.address);
            self.pending = false;
        }
        if accepted {
            state.known.insert(self.address);
            if self.unknown {
                state.unknown -= 1;
                self.unknown = false;
            }
        }
    }
}

fn release_pending(state: &mut State, address: IpAddr) {
    if let Some(count) = state.pending.get_mut(&address) {
        *count -= 1;
        if *count == 0 {
            state.pending.remove(&address);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut state = self.admission.lock();
        if self.pending {
            release_pending(&mut state, self.address);
        }
        if self.unknown {
            state.unknown -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn one_address_gets_a_few_handshakes_and_known_addresses_keep_room() {
        let admission = Arc::new(Admission::new(2, 8));
        admission.learn(ip(1));
        let a = admission.admit(ip(9)).unwrap();
        let _b = admission.admit(ip(9)).unwrap();
        assert_eq!(admission.admit(ip(9)).unwrap_err(), Refusal::AddressBusy);
        let _c = admission.admit(ip(8)).unwrap();
        let _d = admission.admit(ip(7)).unwrap();
        // Four unknown connections: the unknown share (8 / 2) is full.
        assert_eq!(admission.admit(ip(6)).unwrap_err(), Refusal::UnknownFull);
        // A known peer's address still gets in, several times.
        let known: Vec<_> = (0..4).map(|_| admission.admit(ip(1)).unwrap()).collect();
        drop(a);
        assert!(admission.admit(ip(6)).is_ok());
        drop(known);
        assert_eq!(admission.lock().pending.get(&ip(1)), None);
    }

    #[test]
    fn an_accepted_handshake_frees_the_slot_and_teaches_the_address() {
        let admission = Arc::new(Admission::new(1, 4));
        let mut ticket = admission.admit(ip(3)).unwrap();
        ticket.handshake_done(true);
        assert_eq!(admission.lock().unknown, 0);
        assert!(admission.lock().known.contains(&ip(3)));
        drop(ticket);
        assert_eq!(admission.lock().unknown, 0);
        assert!(admission.lock().pending.is_empty());
    }
}
