//! The ownership graph: every object the collector watches, by UID, with edges from each
//! owner to its dependents, as upstream's `GraphBuilder` keeps it.
//!
//! The graph only records what the watches said; it decides nothing. It tells the caller
//! which objects need a look ([`Work`]) after each change, and the workers then check the
//! live state before acting, so a stale graph costs a retry, never a wrong deletion.

use std::collections::{HashMap, HashSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";

/// What identifies an object for the API: its resource (`group/version/plural`), where
/// and what it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectId {
    pub resource: String,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
}

/// One watched object, as the graph needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    pub id: ObjectId,
    pub owners: Vec<OwnerReference>,
    pub deleting: bool,
    pub finalizers: Vec<String>,
}

impl Observed {
    /// Being deleted in the foreground: waits until its blocking dependents are gone.
    pub fn deleting_dependents(&self) -> bool {
        self.deleting && self.finalizers.iter().any(|f| f == FOREGROUND)
    }

    /// Being deleted with its dependents orphaned.
    pub fn orphaning(&self) -> bool {
        self.deleting && self.finalizers.iter().any(|f| f == ORPHAN)
    }
}

/// A node: an observed object, or a placeholder for an owner that some dependent names
/// but no watch has shown (yet).
#[derive(Debug, Default)]
struct Node {
    observed: Option<Observed>,
    dependents: HashSet<String>,
}

/// Objects to look at after a change.
#[derive(Debug, Default, PartialEq)]
pub struct Work {
    /// UIDs whose owners may be gone or waiting for them (attempt to delete), or owners in
    /// foreground deletion whose dependents may now be gone.
    pub attempt_to_delete: Vec<String>,
    /// UIDs of owners being deleted with the `orphan` finalizer.
    pub attempt_to_orphan: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
}

impl Graph {
    /// Records an added or changed object.
    pub fn upsert(&mut self, object: Observed) -> Work {
        let mut work = Work::default();
        let uid = object.id.uid.clone();
        let node = self.nodes.entry(uid.clone()).or_default();
        let previous = node.observed.replace(object.clone());
        let old_owners: HashSet<String> = previous
            .as_ref()
            .map(|p| p.owners.iter().map(|o| o.uid.clone()).collect())
            .unwrap_or_default();
        let new_owners: HashSet<String> = object.owners.iter().map(|o| o.uid.clone()).collect();

        for added in new_owners.difference(&old_owners) {
            self.nodes
                .entry(added.clone())
                .or_default()
                .dependents
                .insert(uid.clone());
        }
        for removed in old_owners.difference(&new_owners) {
            self.unlink(removed, &uid);
            // An owner waiting for its dependents may have been waiting for this one.
            if self.is_deleting_dependents(removed) {
                work.attempt_to_delete.push(removed.clone());
            }
        }
        // A new object whose owners are not (or no longer) known, or whose owners changed:
        // check them. A known owner that exists keeps the object, so this is cheap.
        let owners_unknown = object
            .owners
            .iter()
            .any(|o| self.observed(&o.uid).is_none() || self.is_deleting_dependents(&o.uid));
        if (previous.is_none() || old_owners != new_owners) && owners_unknown {
            work.attempt_to_delete.push(uid.clone());
        }

        let was_waiting = previous.as_ref().is_some_and(Observed::deleting_dependents);
        if object.deleting_dependents() && !was_waiting {
            // Foreground deletion starts: every dependent gets a look, and so does the
            // owner (with no blocking dependents, its finalizer goes at once).
            work.attempt_to_delete.push(uid.clone());
            work.attempt_to_delete.extend(self.dependents(&uid));
        }
        let was_orphaning = previous.as_ref().is_some_and(Observed::orphaning);
        if object.orphaning() && !was_orphaning {
            work.attempt_to_orphan.push(uid.clone());
        }
        work
    }

    /// Records a deleted object: its dependents lost an owner, and owners waiting for it
    /// may be done.
    pub fn remove(&mut self, uid: &str) -> Work {
        let mut work = Work::default();
        let Some(node) = self.nodes.get_mut(uid) else {
            return work;
        };
        let observed = node.observed.take();
        work.attempt_to_delete
            .extend(node.dependents.iter().cloned());
        if node.dependents.is_empty() {
            self.nodes.remove(uid);
        }
        for owner in observed.iter().flat_map(|o| &o.owners) {
            self.unlink(&owner.uid, uid);
            if self.is_deleting_dependents(&owner.uid) {
                work.attempt_to_delete.push(owner.uid.clone());
            }
        }
        work
    }

    /// The watched objects of `resource` (to find the ones a re-list no longer shows).
    pub fn uids_of(&self, resource: &str) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|(_, n)| {
                n.observed
                    .as_ref()
                    .is_some_and(|o| o.id.resource == resource)
            })
            .map(|(uid, _)| uid.clone())
            .collect()
    }

    pub fn observed(&self, uid: &str) -> Option<&Observed> {
        self.nodes.get(uid)?.observed.as_ref()
    }

    /// UIDs of the objects that name `uid` as an owner.
    pub fn dependents(&self, uid: &str) -> Vec<String> {
        self.nodes
            .get(uid)
            .map(|n| n.dependents.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Dependents whose reference to `uid` blocks its foreground deletion.
    pub fn blocking_dependents(&self, uid: &str) -> Vec<String> {
        self.dependents(uid)
            .into_iter()
            .filter(|d| {
                self.observed(d).is_some_and(|o| {
                    o.owners
                        .iter()
                        .any(|r| r.uid == uid && r.block_owner_deletion == Some(true))
                })
            })
            .collect()
    }

    fn is_deleting_dependents(&self, uid: &str) -> bool {
        self.observed(uid)
            .is_some_and(Observed::deleting_dependents)
    }

    fn unlink(&mut self, owner: &str, dependent: &str) {
        if let Some(node) = self.nodes.get_mut(owner) {
            node.dependents.remove(dependent);
            if node.observed.is_none() && node.dependents.is_empty() {
                self.nodes.remove(owner);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner_ref(uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: format!("rs-{uid}"),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(block),
        }
    }

    fn object(uid: &str, owners: Vec<OwnerReference>) -> Observed {
        Observed {
            id: ObjectId {
                resource: "v1/pods".into(),
                namespace: Some("ns".into()),
                name: uid.into(),
                uid: uid.into(),
            },
            owners,
            deleting: false,
            finalizers: vec![],
        }
    }

    #[test]
    fn dependents_of_a_deleted_owner_get_a_look() {
        let mut graph = Graph::default();
        graph.upsert(object("rs", vec![]));
        // The owner is known: no look needed.
        let work = graph.upsert(object("p1", vec![owner_ref("rs", true)]));
        assert!(work.attempt_to_delete.is_empty());
        assert_eq!(graph.dependents("rs"), vec!["p1".to_string()]);
        let work = graph.remove("rs");
        assert_eq!(work.attempt_to_delete, vec!["p1".to_string()]);
        // The placeholder stays while a dependent still names it, then goes.
        graph.remove("p1");
        assert!(graph.is_empty());
    }

    #[test]
    fn unknown_owners_are_checked() {
        let mut graph = Graph::default();
        let work = graph.upsert(object("p1", vec![owner_ref("gone", true)]));
        assert_eq!(work.attempt_to_delete, vec!["p1".to_string()]);
        // A change that does not touch the owners asks for nothing more.
        let mut relabelled = object("p1", vec![owner_ref("gone", true)]);
        relabelled.finalizers = vec!["x".into()];
        assert!(graph.upsert(relabelled).attempt_to_delete.is_empty());
    }

    #[test]
    fn foreground_deletion_waits_for_blocking_dependents() {
        let mut graph = Graph::default();
        graph.upsert(object("rs", vec![]));
        graph.upsert(object("p1", vec![owner_ref("rs", true)]));
        graph.upsert(object("p2", vec![owner_ref("rs", false)]));
        let mut deleting = object("rs", vec![]);
        deleting.deleting = true;
        deleting.finalizers = vec![FOREGROUND.into()];
        let mut work = graph.upsert(deleting.clone());
        work.attempt_to_delete.sort();
        assert_eq!(work.attempt_to_delete, vec!["p1", "p2", "rs"]);
        assert_eq!(graph.blocking_dependents("rs"), vec!["p1".to_string()]);
        // The same state again is no transition.
        assert!(graph.upsert(deleting).attempt_to_delete.is_empty());
        // The blocking dependent goes: the owner gets another look.
        let work = graph.remove("p1");
        assert_eq!(work.attempt_to_delete, vec!["rs".to_string()]);
        assert!(graph.blocking_dependents("rs").is_empty());
    }

    #[test]
    fn orphaning_starts_once() {
        let mut graph = Graph::default();
        let mut owner = object("rs", vec![]);
        owner.deleting = true;
        owner.finalizers = vec![ORPHAN.into()];
        assert_eq!(graph.upsert(owner.clone()).attempt_to_orphan, vec!["rs"]);
        assert!(graph.upsert(owner).attempt_to_orphan.is_empty());
    }

    #[test]
    fn dropped_owner_references_unlink() {
        let mut graph = Graph::default();
        graph.upsert(object("rs", vec![]));
        graph.upsert(object("p1", vec![owner_ref("rs", true)]));
        graph.upsert(object("p1", vec![]));
        assert!(graph.dependents("rs").is_empty());
        assert_eq!(graph.uids_of("v1/pods").len(), 2);
    }
}
