//! Which endpoint a new connection (or UDP session) of one portal goes to: round robin
//! over the ready endpoints, or, under `sessionAffinity: ClientIP`, the endpoint this
//! client last used while that was less than the affinity timeout ago. The semantics of
//! upstream's userspace `LoadBalancerRR`; pure (the caller passes the time), so it is
//! tested without sockets.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::model::Endpoint;

/// A client's pinned endpoint and when it last used it.
#[derive(Clone, Copy, Debug)]
struct Sticky {
    endpoint: Endpoint,
    last_used: Instant,
}

#[derive(Debug)]
pub struct RoundRobin {
    endpoints: Vec<Endpoint>,
    /// The endpoint the next unpinned choice takes.
    next: usize,
    /// `Some(timeout)` under ClientIP affinity.
    affinity: Option<Duration>,
    clients: HashMap<IpAddr, Sticky>,
    /// Puts a new set of endpoints in the order the rotation takes them.
    order: fn(&mut [Endpoint]),
}

/// Upstream shuffles a Service's endpoints whenever they change, so that the proxies of
/// different nodes (and a restarted one) do not all send their first connections to the
/// same endpoint.
fn shuffle(endpoints: &mut [Endpoint]) {
    fastrand::shuffle(endpoints);
}

impl RoundRobin {
    pub fn new(endpoints: &[Endpoint], affinity: Option<Duration>) -> RoundRobin {
        RoundRobin::ordered_by(shuffle, endpoints, affinity)
    }

    fn ordered_by(
        order: fn(&mut [Endpoint]),
        endpoints: &[Endpoint],
        affinity: Option<Duration>,
    ) -> RoundRobin {
        let mut rr = RoundRobin {
            endpoints: Vec::new(),
            next: 0,
            affinity,
            clients: HashMap::new(),
            order,
        };
        rr.update(endpoints, affinity);
        rr
    }

    /// Takes the Service's current endpoints and affinity. A changed set of endpoints is
    /// shuffled, starts the rotation again and unpins the clients of endpoints that went
    /// (the same endpoints in another order change nothing, as upstream compares them
    /// sorted); a changed affinity forgets every pin (upstream resets the state when the
    /// affinity changes). Whether anything changed.
    pub fn update(&mut self, endpoints: &[Endpoint], affinity: Option<Duration>) -> bool {
        let mut changed = false;
        if affinity != self.affinity {
            self.affinity = affinity;
            self.clients.clear();
            changed = true;
        }
        let sorted = |list: &[Endpoint]| {
            let mut list = list.to_vec();
            list.sort_unstable();
            list
        };
        if sorted(endpoints) != sorted(&self.endpoints) {
            let mut ordered = endpoints.to_vec();
            (self.order)(&mut ordered);
            self.endpoints = ordered;
            self.next = 0;
            let current = &self.endpoints;
            self.clients.retain(|_, s| current.contains(&s.endpoint));
            changed = true;
        }
        changed
    }

    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Whether `endpoint` still serves this portal (a UDP session to one that went is
    /// moved on its next datagram).
    pub fn serves(&self, endpoint: &Endpoint) -> bool {
        self.endpoints.contains(endpoint)
    }

    /// The endpoint for a new connection from `client`; `None` without endpoints. With
    /// `reset` (a retry after the last choice failed to connect) the client's pin is
    /// ignored and replaced by the next endpoint in turn.
    pub fn choose(&mut self, client: IpAddr, reset: bool, now: Instant) -> Option<Endpoint> {
        if self.endpoints.is_empty() {
            return None;
        }
        if let (Some(timeout), false) = (self.affinity, reset) {
            if let Some(sticky) = self.clients.get_mut(&client) {
                if now.saturating_duration_since(sticky.last_used) < timeout {
                    sticky.last_used = now;
                    return Some(sticky.endpoint);
                }
            }
        }
        let endpoint = self.endpoints[self.next % self.endpoints.len()];
        self.next = (self.next + 1) % self.endpoints.len();
        if self.affinity.is_some() {
            self.clients.insert(
                client,
                Sticky {
                    endpoint,
                    last_used: now,
                },
            );
        }
        Some(endpoint)
    }

    /// Drops the pins not used within the affinity timeout (upstream's periodic cleanup
    /// of stale sticky sessions), so clients that went do not pile up.
    pub fn forget_expired(&mut self, now: Instant) {
        match self.affinity {
            Some(timeout) => self
                .clients
                .retain(|_, s| now.saturating_duration_since(s.last_used) < timeout),
            None => self.clients.clear(),
        }
    }

    /// How many clients are pinned.
    pub fn pinned(&self) -> usize {
        self.clients.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(last: u8) -> Endpoint {
        Endpoint {
            ip: std::net::Ipv4Addr::new(10, 88, 0, last),
            port: 8080,
        }
    }

    /// A round robin that keeps the order it is given, so that picks can be named.
    fn unshuffled(endpoints: &[Endpoint], affinity: Option<Duration>) -> RoundRobin {
        RoundRobin::ordered_by(|_| {}, endpoints, affinity)
    }

    #[test]
    fn a_new_set_of_endpoints_is_shuffled_and_the_same_set_reordered_changes_nothing() {
        let endpoints: Vec<Endpoint> = (1..=6).map(ep).collect();
        let mut orders = std::collections::HashSet::new();
        for _ in 0..40 {
            let mut rr = RoundRobin::new(&endpoints[..1], None);
            assert!(rr.update(&endpoints, None));
            let mut taken = rr.endpoints().to_vec();
            orders.insert(taken.clone());
            taken.sort_unstable();
            assert_eq!(taken, endpoints, "a permutation of the endpoints");
            let mut reversed = endpoints.clone();
            reversed.reverse();
            let before = rr.endpoints().to_vec();
            assert!(!rr.update(&reversed, None), "the same set in another order");
            assert_eq!(rr.endpoints(), before.as_slice());
        }
        // 720 orders are possible: forty draws all alike would mean no shuffle.
        assert!(orders.len() > 1, "always {orders:?}");
    }

    fn client(last: u8) -> IpAddr {
        IpAddr::from([10, 88, 1, last])
    }

    #[test]
    fn rotates_over_the_endpoints_in_turn() {
        let now = Instant::now();
        let mut rr = unshuffled(&[ep(1), ep(2), ep(3)], None);
        let picks: Vec<Endpoint> = (0..7)
            .filter_map(|_| rr.choose(client(1), false, now))
            .collect();
        assert_eq!(picks, [ep(1), ep(2), ep(3), ep(1), ep(2), ep(3), ep(1)]);
        assert_eq!(rr.pinned(), 0, "nothing pinned without affinity");
    }

    #[test]
    fn no_endpoints_no_choice() {
        let mut rr = unshuffled(&[], Some(Duration::from_secs(10)));
        assert_eq!(rr.choose(client(1), false, Instant::now()), None);
        rr.update(&[ep(1)], Some(Duration::from_secs(10)));
        assert_eq!(rr.choose(client(1), false, Instant::now()), Some(ep(1)));
        rr.update(&[], Some(Duration::from_secs(10)));
        assert_eq!(rr.choose(client(1), false, Instant::now()), None);
    }

    #[test]
    fn client_ip_affinity_pins_until_the_timeout_passes_unused() {
        let start = Instant::now();
        let timeout = Duration::from_secs(10);
        let mut rr = unshuffled(&[ep(1), ep(2)], Some(timeout));
        assert_eq!(rr.choose(client(1), false, start), Some(ep(1)));
        assert_eq!(rr.choose(client(2), false, start), Some(ep(2)));
        // Each use within the timeout keeps the pin and renews it.
        for s in [1, 9, 18, 27] {
            let at = start + Duration::from_secs(s);
            assert_eq!(rr.choose(client(1), false, at), Some(ep(1)), "at {s}s");
        }
        // Client 2 was last seen at 0 s: at 10 s its pin has expired, and it takes the
        // next endpoint in turn.
        let later = start + Duration::from_secs(10);
        assert_eq!(rr.choose(client(2), false, later), Some(ep(1)));
        assert_eq!(
            rr.choose(client(2), false, later),
            Some(ep(1)),
            "pinned anew"
        );
        // Unused past the timeout: forgotten by the cleanup.
        rr.forget_expired(start + Duration::from_secs(40));
        assert_eq!(rr.pinned(), 0);
    }

    #[test]
    fn a_reset_skips_the_pin_and_pins_the_next_endpoint() {
        let now = Instant::now();
        let mut rr = unshuffled(&[ep(1), ep(2)], Some(Duration::from_secs(60)));
        assert_eq!(rr.choose(client(1), false, now), Some(ep(1)));
        // The connection to ep(1) failed: the retry moves on and re-pins.
        assert_eq!(rr.choose(client(1), true, now), Some(ep(2)));
        assert_eq!(rr.choose(client(1), false, now), Some(ep(2)));
    }

    #[test]
    fn a_removed_endpoint_is_no_longer_chosen_nor_pinned() {
        let now = Instant::now();
        let affinity = Some(Duration::from_secs(60));
        let mut rr = unshuffled(&[ep(1), ep(2)], affinity);
        assert_eq!(rr.choose(client(1), false, now), Some(ep(1)));
        assert_eq!(rr.choose(client(2), false, now), Some(ep(2)));
        assert!(rr.update(&[ep(2)], affinity));
        assert!(!rr.serves(&ep(1)));
        assert_eq!(rr.pinned(), 1, "only the pin to the endpoint that stays");
        for _ in 0..4 {
            assert_eq!(rr.choose(client(1), false, now), Some(ep(2)));
            assert_eq!(rr.choose(client(3), false, now), Some(ep(2)));
        }
        // Unchanged input changes nothing, and keeps the pins.
        assert!(!rr.update(&[ep(2)], affinity));
        assert_eq!(rr.pinned(), 3);
    }

    #[test]
    fn switching_affinity_forgets_every_pin() {
        let now = Instant::now();
        let mut rr = unshuffled(&[ep(1), ep(2)], Some(Duration::from_secs(60)));
        assert_eq!(rr.choose(client(1), false, now), Some(ep(1)));
        assert!(rr.update(&[ep(1), ep(2)], None));
        assert_eq!(rr.pinned(), 0);
        let picks: Vec<_> = (0..4)
            .filter_map(|_| rr.choose(client(1), false, now))
            .collect();
        assert_eq!(picks, [ep(2), ep(1), ep(2), ep(1)]);
        assert!(rr.update(&[ep(1), ep(2)], Some(Duration::from_secs(30))));
        let first = rr.choose(client(1), false, now);
        assert!((0..4).all(|_| rr.choose(client(1), false, now) == first));
    }
}
