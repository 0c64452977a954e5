//! Who hosts which session, as the services would see it: a node hosts a
//! session from its `Action::Start` until its `Action::Stop` or its crash.
//! The session invariants and the takeover measurement read this, never a
//! node's own opinion of who the primary is.

use std::collections::{BTreeSet, HashMap};

/// A session, numbered in the order the simulator opened them.
pub type Sid = u32;

/// Hosts of every session the simulator opened.
#[derive(Debug, Clone, Default)]
pub struct Ownership {
    /// Session id to number (lookups only, never iterated).
    index: HashMap<String, Sid>,
    ids: Vec<String>,
    /// Per session, the nodes hosting it, ascending.
    hosts: Vec<Vec<u32>>,
    /// Per node, the sessions it hosts.
    by_node: Vec<BTreeSet<Sid>>,
    /// Sessions hosted by two nodes or more.
    shared: BTreeSet<Sid>,
}

impl Ownership {
    /// No sessions yet, `nodes` nodes.
    pub fn new(nodes: usize) -> Self {
        Ownership {
            by_node: vec![BTreeSet::new(); nodes],
            ..Self::default()
        }
    }

    /// Numbers a session the simulator opened (idempotent).
    pub fn register(&mut self, id: &str) -> Sid {
        if let Some(&sid) = self.index.get(id) {
            return sid;
        }
        let sid = self.ids.len() as Sid;
        self.index.insert(id.to_owned(), sid);
        self.ids.push(id.to_owned());
        self.hosts.push(Vec::new());
        sid
    }

    /// The number of a session, if the simulator opened it.
    pub fn sid(&self, id: &str) -> Option<Sid> {
        self.index.get(id).copied()
    }

    /// The id of session `sid`.
    pub fn id(&self, sid: Sid) -> &str {
        &self.ids[sid as usize]
    }

    /// Sessions opened.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no session was opened.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The nodes hosting `sid`, ascending.
    pub fn hosts(&self, sid: Sid) -> &[u32] {
        &self.hosts[sid as usize]
    }

    /// The sessions node `node` hosts.
    pub fn hosted_by(&self, node: u32) -> impl Iterator<Item = Sid> + '_ {
        self.by_node[node as usize].iter().copied()
    }

    /// Sessions hosted by two nodes or more, ascending.
    pub fn shared(&self) -> impl Iterator<Item = Sid> + '_ {
        self.shared.iter().copied()
    }

    /// `node` started hosting `sid`; returns whether that is new.
    pub fn start(&mut self, node: u32, sid: Sid) -> bool {
        let hosts = &mut self.hosts[sid as usize];
        let Err(at) = hosts.binary_search(&node) else {
            return false;
        };
        hosts.insert(at, node);
        if hosts.len() >= 2 {
            self.shared.insert(sid);
        }
        self.by_node[node as usize].insert(sid);
        true
    }

    /// `node` stopped hosting `sid`; returns whether it hosted it.
    pub fn stop(&mut self, node: u32, sid: Sid) -> bool {
        let hosts = &mut self.hosts[sid as usize];
        let Ok(at) = hosts.binary_search(&node) else {
            return false;
        };
        hosts.remove(at);
        if hosts.len() < 2 {
            self.shared.remove(&sid);
        }
        self.by_node[node as usize].remove(&sid);
        true
    }

    /// `node`'s process is gone, and its services with it; returns the
    /// sessions it hosted.
    pub fn crash(&mut self, node: u32) -> Vec<Sid> {
        let sessions: Vec<Sid> = self.by_node[node as usize].iter().copied().collect();
        for &sid in &sessions {
            self.stop(node, sid);
        }
        sessions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_follow_starts_stops_and_crashes() {
        let mut o = Ownership::new(3);
        let a = o.register("a");
        assert_eq!(o.register("a"), a);
        let b = o.register("b");
        assert!(o.start(2, a) && o.start(0, a) && !o.start(0, a));
        assert_eq!(o.hosts(a), [0, 2]);
        assert_eq!(o.shared().collect::<Vec<_>>(), [a]);
        o.start(2, b);
        assert_eq!(o.crash(2), [a, b]);
        assert_eq!((o.hosts(a), o.hosts(b)), (&[0][..], &[][..]));
        assert_eq!(o.shared().count(), 0);
        assert!(!o.stop(2, a) && o.stop(0, a));
    }
}
