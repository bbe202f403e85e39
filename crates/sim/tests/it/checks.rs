//! The checks themselves fail on broken states (a simulator whose checks cannot fail proves
//! nothing).

use std::collections::BTreeMap;
use std::sync::Arc;

use model::{Kind, ObjectKey, ObjectName, Scope, SiteId};
use sim::check::check;
use sim::dice::Dice;
use sim::run::Acked;
use sim::topology::Topology;
use store::{LocalWrite, SqliteStore, Store};

fn stores(topo: &Topology, dir: &std::path::Path) -> BTreeMap<SiteId, Arc<dyn Store>> {
    topo.sites
        .values()
        .map(|s| {
            let store =
                SqliteStore::open(&dir.join(format!("{}.sqlite3", s.id)), s.id.clone(), s.max_skew_ms)
                    .expect("open a store");
            (s.id.clone(), Arc::new(store) as Arc<dyn Store>)
        })
        .collect()
}

fn write(store: &dyn Store, key: &ObjectKey) -> model::VersionId {
    let committed = store
        .write(LocalWrite {
            key: key.clone(),
            labels: BTreeMap::new(),
            spec: serde_json::json!({"n": 1}),
            deleted: false,
            author: "test".into(),
            precondition: None,
            now_ms: 1_764_000_000_000,
        })
        .expect("write");
    committed.object.version.id()
}

#[test]
fn a_version_only_one_site_has_breaks_convergence_and_the_acknowledgement() {
    let topo = Topology::random(&mut Dice::new(1)).expect("topology");
    let dir = tempfile::tempdir().expect("tempdir");
    let stores = stores(&topo, dir.path());
    let global = SiteId::new("global-control").expect("id");
    let key = ObjectKey::new(
        Kind::Policy,
        Scope::new("global").expect("scope"),
        ObjectName::new("p0").expect("name"),
    );
    let version = write(stores[&global].as_ref(), &key);
    let acked = [Acked { no: 0, site: global.clone(), key: key.clone(), version }];
    let report = check(&topo, &stores, &BTreeMap::new(), &acked).expect("check");
    let rules: Vec<&str> = report.violations.iter().map(|v| v.rule).collect();
    assert!(rules.contains(&"convergence"), "{rules:?}");
    assert!(rules.contains(&"acknowledged"), "{rules:?}");
    // Every other site should have it.
    let missing = report.violations.iter().filter(|v| v.rule == "convergence").count();
    assert_eq!(missing, topo.sites.len() - 1);

    let clean = check(&topo, &stores, &BTreeMap::new(), &[]).expect("check");
    assert!(clean.violations.iter().all(|v| v.rule == "convergence"));
}

#[test]
fn an_object_outside_a_sites_subtree_breaks_the_subtree_and_authority_rules() {
    let topo = Topology::random(&mut Dice::new(2)).expect("topology");
    let dir = tempfile::tempdir().expect("tempdir");
    let stores = stores(&topo, dir.path());
    // Two sites neither of which is the other's ancestor: the zones under different regions,
    // or a zone and a region that is not its parent.
    let zone = topo
        .sites
        .values()
        .find(|s| s.parent.is_some() && s.card.level != model::Level::Regional)
        .expect("a zone");
    let other = topo
        .sites
        .values()
        .find(|s| {
            s.id != zone.id
                && !topo.directory.ancestors(&zone.id).contains(&s.id)
                && !topo.directory.ancestors(&s.id).contains(&zone.id)
        })
        .expect("an unrelated site");
    let key = ObjectKey::new(Kind::Policy, other.scope.clone(), ObjectName::new("p0").expect("name"));
    // Written straight into the zone's store, past the authority check a site makes.
    write(stores[&zone.id].as_ref(), &key);
    let report = check(&topo, &stores, &BTreeMap::new(), &[]).expect("check");
    let rules: Vec<&str> = report.violations.iter().map(|v| v.rule).collect();
    assert!(rules.contains(&"subtree"), "{rules:?}");
    assert!(rules.contains(&"authority"), "{rules:?}");
}
