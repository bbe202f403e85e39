//! The node cases of the suite: managed nodes' heartbeats, recorded durably, listed in id
//! order, and never in the change log.

use std::collections::BTreeMap;

use model::ObjectName;

use super::{Harness, T0};
use crate::{Heartbeat, MAX_PAGE, NodeRecord};

fn node(id: &str) -> ObjectName {
    ObjectName::new(id).expect("a valid node id")
}

fn beat(id: &str, at_ms: u64, version: &str, applied: &[(&str, &str)]) -> Heartbeat {
    Heartbeat {
        node: node(id),
        at_ms,
        interval_seconds: 5,
        software_version: version.to_owned(),
        health: "healthy".to_owned(),
        applied: applied.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
    }
}

/// The first heartbeat registers a node; the next one replaces its record and keeps the time
/// of the one before; both survive a restart, and neither enters the change log.
pub fn a_heartbeat_registers_then_updates_a_node(h: &mut dyn Harness) {
    h.reset();
    let store = h.open();
    let applied = [("Policy/global/baseline", "1764000000123.0@global-control")];
    let first = store.record_heartbeat(&beat("a2-node-07", T0, "1.4.1", &applied)).expect("heartbeat");
    assert_eq!(
        first,
        NodeRecord {
            id: node("a2-node-07"),
            last_heartbeat_ms: T0,
            previous_heartbeat_ms: None,
            interval_seconds: 5,
            software_version: "1.4.1".to_owned(),
            health: "healthy".to_owned(),
            applied: applied.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        }
    );
    let mut second = beat("a2-node-07", T0 + 5_000, "1.4.2", &[]);
    second.health = "degraded".to_owned();
    second.interval_seconds = 10;
    let updated = store.record_heartbeat(&second).expect("heartbeat");
    assert_eq!(updated.last_heartbeat_ms, T0 + 5_000);
    assert_eq!(updated.previous_heartbeat_ms, Some(T0), "the heartbeat before is kept");
    assert_eq!(
        (updated.software_version.as_str(), updated.health.as_str(), updated.interval_seconds),
        ("1.4.2", "degraded", 10)
    );
    assert_eq!(updated.applied, BTreeMap::new(), "what the node applied is replaced, not merged");
    assert_eq!(store.last_seq().expect("last_seq"), 0, "node records never enter the change log");

    drop(store);
    let store = h.open();
    assert_eq!(store.nodes(None, 0).expect("nodes"), vec![updated], "records survive a restart");
}

/// Nodes list in id order (byte by byte), page after page, with the limit clamped.
pub fn nodes_page_in_id_order(h: &mut dyn Harness) {
    h.reset();
    let store = h.open();
    for (i, id) in ["b-2", "a-10", "a-9", "c", "a-1"].iter().enumerate() {
        store.record_heartbeat(&beat(id, T0 + i as u64, "1.0.0", &[])).expect("heartbeat");
    }
    let ids = |records: Vec<NodeRecord>| records.into_iter().map(|r| r.id.to_string()).collect::<Vec<_>>();
    assert_eq!(ids(store.nodes(None, 0).expect("nodes")), ["a-1", "a-10", "a-9", "b-2", "c"]);
    assert_eq!(ids(store.nodes(None, 2).expect("nodes")), ["a-1", "a-10"]);
    assert_eq!(ids(store.nodes(Some(&node("a-10")), 2).expect("nodes")), ["a-9", "b-2"]);
    assert_eq!(ids(store.nodes(Some(&node("b-2")), 2).expect("nodes")), ["c"]);
    assert!(store.nodes(Some(&node("c")), 2).expect("nodes").is_empty());
    assert_eq!(ids(store.nodes(Some(&node("a")), 1).expect("nodes")), ["a-1"], "after need not be a node");

    for i in 0..MAX_PAGE + 1 {
        store.record_heartbeat(&beat(&format!("n-{i:05}"), T0, "1.0.0", &[])).expect("heartbeat");
    }
    assert_eq!(store.nodes(None, usize::MAX).expect("nodes").len(), MAX_PAGE, "limits clamp to a page");
}
