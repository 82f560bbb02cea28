//! Totals over every node's pods, kept from one scheduling cycle to the next.
//!
//! Upstream's PodTopologySpread and InterPodAffinity count the pods of every node in
//! every cycle, which at 5,000 nodes is most of a cycle's work. Here a total is kept per
//! kind of incoming pod (a key: whatever of the pod decides how the nodes count for it),
//! and in each cycle only the nodes whose `NodeInfo` changed are counted again.
//!
//! The scheduler's cache changes node infos only through `Arc::make_mut`, and
//! `make_mut` moves a value that a `Weak` still points at to a new allocation (the old
//! one stays allocated while the `Weak` lives, so its address is not reused): a node
//! whose pointer is the one counted last is unchanged.

use std::sync::{Arc, Mutex, Weak};

use crate::cache::NodeInfo;

/// A sum of per-node parts.
pub trait Total: Clone + Default {
    /// What one node adds to the total.
    type Part;

    /// Adds (`sign` 1) or takes away (`sign` -1) one node's part.
    fn add(&mut self, part: &Self::Part, sign: i64);
}

/// How many pod kinds keep their totals between cycles, the most recently used first.
const CAPACITY: usize = 8;

/// The totals of the most recently scheduled kinds of pods.
pub struct Tallies<K, T: Total> {
    memos: Mutex<Vec<Memo<K, T>>>,
}

/// A clone starts with no totals: they are a cache, and a plugin cloned from its
/// configuration counts for itself.
impl<K, T: Total> Clone for Tallies<K, T> {
    fn clone(&self) -> Self {
        Tallies::default()
    }
}

impl<K, T: Total> std::fmt::Debug for Tallies<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kinds = self.memos.lock().map(|m| m.len()).unwrap_or(0);
        f.debug_struct("Tallies").field("kinds", &kinds).finish()
    }
}

impl<K, T: Total> Default for Tallies<K, T> {
    fn default() -> Self {
        Tallies {
            memos: Mutex::new(Vec::new()),
        }
    }
}

struct Memo<K, T: Total> {
    key: K,
    /// Slot by slot, the nodes as last counted and what each added.
    nodes: Vec<(Weak<NodeInfo>, T::Part)>,
    /// Shared with the cycles that read it; copied only if one still holds it when the
    /// next cycle updates it.
    total: Arc<T>,
}

impl<K: PartialEq, T: Total> Tallies<K, T> {
    /// The total over `nodes` for pods of kind `key`, where `part_of` counts one node.
    pub fn total(
        &self,
        key: K,
        nodes: &[Arc<NodeInfo>],
        part_of: impl Fn(&NodeInfo) -> T::Part,
    ) -> Arc<T> {
        // A poisoned lock means a cycle panicked while counting: start afresh.
        let mut memos = self.memos.lock().unwrap_or_else(|poisoned| {
            let mut memos = poisoned.into_inner();
            memos.clear();
            memos
        });
        let mut memo = match memos.iter().position(|m| m.key == key) {
            Some(at) => memos.remove(at),
            None => Memo {
                key,
                nodes: Vec::new(),
                total: Arc::default(),
            },
        };
        memo.refresh(nodes, part_of);
        let total = memo.total.clone();
        memos.insert(0, memo);
        memos.truncate(CAPACITY);
        total
    }
}

impl<K, T: Total> Memo<K, T> {
    /// Brings the total up to `nodes`, counting again the slots whose node changed. A
    /// slot's old part is taken away and the new one added, so the total stays right
    /// whichever node a slot holds (nodes joining shift the slots after them).
    fn refresh(&mut self, nodes: &[Arc<NodeInfo>], part_of: impl Fn(&NodeInfo) -> T::Part) {
        let total = Arc::make_mut(&mut self.total);
        for (slot, node) in nodes.iter().enumerate() {
            let known = self.nodes.get(slot);
            if known.is_some_and(|(seen, _)| std::ptr::eq(seen.as_ptr(), Arc::as_ptr(node))) {
                continue;
            }
            let part = part_of(node);
            total.add(&part, 1);
            let counted = (Arc::downgrade(node), part);
            match self.nodes.get_mut(slot) {
                Some(old) => {
                    let (_, old_part) = std::mem::replace(old, counted);
                    total.add(&old_part, -1);
                }
                None => self.nodes.push(counted),
            }
        }
        for (_, gone) in self.nodes.drain(nodes.len().min(self.nodes.len())..) {
            total.add(&gone, -1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testing::node;
    use serde_json::json;
    use std::cell::Cell;

    /// Pods per node, summed.
    #[derive(Clone, Default, Debug, PartialEq)]
    struct Pods(i64);

    impl Total for Pods {
        type Part = i64;
        fn add(&mut self, part: &i64, sign: i64) {
            self.0 += sign * part;
        }
    }

    #[test]
    fn only_changed_nodes_are_counted_again() {
        let counted = Cell::new(0);
        let part_of = |n: &NodeInfo| {
            counted.set(counted.get() + 1);
            n.pods.len() as i64
        };
        let with_pods = |name: &str, pods: usize| {
            let mut info = node(name, json!({}), json!({}));
            for i in 0..pods {
                info.add_pod(Arc::new(crate::plugins::testing::pod_with(
                    &format!("{name}-{i}"),
                    json!({}),
                    json!({}),
                )));
            }
            Arc::new(info)
        };
        let tallies: Tallies<&str, Pods> = Tallies::default();
        let (a, b, c) = (with_pods("a", 1), with_pods("b", 2), with_pods("c", 3));
        let nodes = vec![a.clone(), b.clone(), c.clone()];
        assert_eq!(*tallies.total("k", &nodes, part_of), Pods(6));
        assert_eq!(counted.get(), 3);
        assert_eq!(*tallies.total("k", &nodes, part_of), Pods(6));
        assert_eq!(counted.get(), 3, "nothing changed, nothing counted");
        // b replaced (as make_mut does), a node joining before it, c gone.
        let b2 = with_pods("b", 5);
        let nodes = vec![a.clone(), with_pods("a2", 4), b2];
        assert_eq!(*tallies.total("k", &nodes, part_of), Pods(10));
        assert_eq!(counted.get(), 5, "the two changed slots only");
        // Another key counts for itself; the first is kept.
        assert_eq!(*tallies.total("other", &nodes, part_of), Pods(10));
        assert_eq!(counted.get(), 8);
        assert_eq!(*tallies.total("k", &nodes[..1], part_of), Pods(1));
        assert_eq!(
            counted.get(),
            8,
            "shrinking takes parts away without counting"
        );
    }
}
