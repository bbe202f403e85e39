//! Who may write what: the authority rules of DESIGN.md, as pure functions over a site
//! directory.
//!
//! | writer | object scoped at | allowed when |
//! | --- | --- | --- |
//! | the scope's own site | its own scope | always |
//! | an ancestor | a descendant's scope | always |
//! | a descendant | an ancestor's scope (a local override) | `can_modify_policies`; under `conditional` autonomy only while isolated, and only the parent's scope |
//! | anyone else | — | never |
//!
//! `can_deploy_versions` guards `Release` and `Rollout` objects; `can_operate_isolated: false`
//! refuses every write while the site is isolated.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Autonomy, Kind, Level, Scope, SiteId};

/// How objects that conflict are resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// The greatest `(hlc, origin)` wins.
    #[default]
    LastWriteWins,
    /// The version from the higher authority level wins, then last-write-wins.
    AuthorityWins,
    /// Both kept; the last-write-wins candidate is provisional until an operator acknowledges
    /// or picks.
    Manual,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::LastWriteWins => "last-write-wins",
            Strategy::AuthorityWins => "authority-wins",
            Strategy::Manual => "manual",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What every site needs to know about another to check its writes: published by each site in
/// its hellos, so the directory spreads through the tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteCard {
    pub id: SiteId,
    pub scope: Scope,
    pub parent: Option<SiteId>,
    pub level: Level,
    pub autonomy: Autonomy,
    pub can_operate_isolated: bool,
    pub can_modify_policies: bool,
    pub can_deploy_versions: bool,
    /// The conflict strategy for objects of this site's scope.
    pub strategy: Strategy,
}

/// How a writer stands to the site whose scope an object belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// The writer is the scope's own site.
    Own,
    /// The writer is an ancestor of the scope's site.
    Ancestor,
    /// The writer is a descendant of the scope's site; `depth` 1 is a child.
    Descendant { depth: usize },
    /// Neither: a sibling or an unrelated site.
    Unrelated,
}

/// The rule a refused write broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// Siblings and unrelated sites never write each other's scopes.
    NotInLineage,
    /// A local override needs `can_modify_policies`.
    ModifyPolicies,
    /// Under conditional autonomy a local override needs the site to be isolated.
    ConditionalNotIsolated,
    /// Under conditional autonomy a local override reaches only the parent's scope.
    ConditionalBeyondParent,
    /// A site without autonomy never overrides.
    NoAutonomy,
    /// `Release` and `Rollout` need `can_deploy_versions`.
    DeployVersions,
    /// An isolated site without `can_operate_isolated` refuses writes.
    OperateIsolated,
    /// The writer or the scope is not in the directory, so the write cannot be checked.
    UnknownSite,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::NotInLineage => "not-in-lineage",
            Rule::ModifyPolicies => "can-modify-policies",
            Rule::ConditionalNotIsolated => "conditional-autonomy-not-isolated",
            Rule::ConditionalBeyondParent => "conditional-autonomy-beyond-parent",
            Rule::NoAutonomy => "no-autonomy",
            Rule::DeployVersions => "can-deploy-versions",
            Rule::OperateIsolated => "can-operate-isolated",
            Rule::UnknownSite => "unknown-site",
        }
    }
}

/// A write the rules refuse, with what to tell the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct Refusal {
    pub rule: Rule,
    pub detail: String,
}

/// The sites a site knows, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directory {
    sites: BTreeMap<SiteId, SiteCard>,
}

impl Directory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a card.
    pub fn insert(&mut self, card: SiteCard) {
        self.sites.insert(card.id.clone(), card);
    }

    pub fn get(&self, id: &SiteId) -> Option<&SiteCard> {
        self.sites.get(id)
    }

    pub fn cards(&self) -> impl Iterator<Item = &SiteCard> {
        self.sites.values()
    }

    /// The site whose scope is `scope`.
    pub fn owner_of(&self, scope: &Scope) -> Option<&SiteCard> {
        self.sites.values().find(|c| &c.scope == scope)
    }

    /// The chain of ancestors of `site`, nearest first (bounded by the directory's size, so a
    /// cycle in bad data cannot loop forever).
    pub fn ancestors(&self, site: &SiteId) -> Vec<SiteId> {
        let mut chain = Vec::new();
        let mut current = self.sites.get(site).and_then(|c| c.parent.clone());
        while let Some(id) = current {
            if chain.contains(&id) || chain.len() > self.sites.len() {
                break;
            }
            current = self.sites.get(&id).and_then(|c| c.parent.clone());
            chain.push(id);
        }
        chain
    }

    /// The sites that hold objects of `scope`: its owner, the owner's ancestors and the owner's
    /// descendants, in id order. Empty when no known site owns the scope.
    pub fn holders(&self, scope: &Scope) -> Vec<SiteId> {
        let Some(owner) = self.owner_of(scope) else { return Vec::new() };
        let above = self.ancestors(&owner.id);
        self.sites
            .keys()
            .filter(|id| *id == &owner.id || above.contains(id) || self.ancestors(id).contains(&owner.id))
            .cloned()
            .collect()
    }

    /// How `writer` stands to the owner of `scope`.
    pub fn relation(&self, writer: &SiteId, scope: &Scope) -> Option<Relation> {
        let owner = self.owner_of(scope)?;
        if &owner.id == writer {
            return Some(Relation::Own);
        }
        if self.ancestors(&owner.id).contains(writer) {
            return Some(Relation::Ancestor);
        }
        if let Some(depth) = self.ancestors(writer).iter().position(|a| a == &owner.id) {
            return Some(Relation::Descendant { depth: depth + 1 });
        }
        Some(Relation::Unrelated)
    }

    /// Checks a write of `kind` in `scope` by `writer`. `isolated` is whether the writer is
    /// isolated from its upstream right now: `Some` where the writer itself checks (at write
    /// time), `None` where another site checks a version it received (it cannot know).
    pub fn check_write(
        &self,
        writer: &SiteId,
        scope: &Scope,
        kind: Kind,
        isolated: Option<bool>,
    ) -> Result<(), Refusal> {
        let Some(card) = self.get(writer) else {
            return Err(Refusal {
                rule: Rule::UnknownSite,
                detail: format!(
                    "site `{writer}` is not in this site's directory, so its write cannot be checked"
                ),
            });
        };
        let Some(relation) = self.relation(writer, scope) else {
            return Err(Refusal {
                rule: Rule::UnknownSite,
                detail: format!("no site of the federation is known to own scope `{scope}`"),
            });
        };
        // Written out only into a refusal: an allowed write (nearly every one) builds no text.
        let who = Who { writer, card };
        if isolated == Some(true) && !card.can_operate_isolated {
            return Err(Refusal {
                rule: Rule::OperateIsolated,
                detail: format!(
                    "{who} is isolated and its authority has `can_operate_isolated: false`: it accepts no writes until its upstream link is back"
                ),
            });
        }
        if matches!(kind, Kind::Release | Kind::Rollout) && !card.can_deploy_versions {
            return Err(Refusal {
                rule: Rule::DeployVersions,
                detail: format!(
                    "{who} may not write {kind} objects: its authority has `can_deploy_versions: false`"
                ),
            });
        }
        match relation {
            Relation::Own | Relation::Ancestor => Ok(()),
            Relation::Unrelated => Err(Refusal {
                rule: Rule::NotInLineage,
                detail: format!(
                    "{who} may not write scope `{scope}`: a site writes only its own scope, its descendants' and (as a local override) its ancestors'; write it at `{}` or one of its ancestors",
                    self.owner_of(scope).map(|c| c.id.to_string()).unwrap_or_default()
                ),
            }),
            Relation::Descendant { depth } => {
                if card.autonomy == Autonomy::None {
                    return Err(Refusal {
                        rule: Rule::NoAutonomy,
                        detail: format!(
                            "{who} has no autonomy, so it may not override scope `{scope}` of an ancestor"
                        ),
                    });
                }
                if !card.can_modify_policies {
                    return Err(Refusal {
                        rule: Rule::ModifyPolicies,
                        detail: format!(
                            "{who} may not override scope `{scope}` of an ancestor: its authority has `can_modify_policies: false`"
                        ),
                    });
                }
                if card.autonomy == Autonomy::Conditional {
                    if depth > 1 {
                        return Err(Refusal {
                            rule: Rule::ConditionalBeyondParent,
                            detail: format!(
                                "{who} may override only its parent's scope, not `{scope}`: conditional autonomy covers surviving a cut from the parent"
                            ),
                        });
                    }
                    if isolated == Some(false) {
                        return Err(Refusal {
                            rule: Rule::ConditionalNotIsolated,
                            detail: format!(
                                "{who} may override scope `{scope}` only while isolated from its upstream; it is connected, so write at `{}` instead",
                                self.owner_of(scope).map(|c| c.id.to_string()).unwrap_or_default()
                            ),
                        });
                    }
                }
                Ok(())
            }
        }
    }
}

/// How a refusal names the writing site: `site `x` (region authority, partial autonomy)`.
struct Who<'a> {
    writer: &'a SiteId,
    card: &'a SiteCard,
}

impl fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "site `{}` ({} authority, {} autonomy)", self.writer, self.card.level, self.card.autonomy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card(id: &str, scope: &str, parent: Option<&str>, level: Level, autonomy: Autonomy) -> SiteCard {
        SiteCard {
            id: SiteId::new(id).unwrap(),
            scope: Scope::new(scope).unwrap(),
            parent: parent.map(|p| SiteId::new(p).unwrap()),
            level,
            autonomy,
            can_operate_isolated: true,
            can_modify_policies: true,
            can_deploy_versions: autonomy == Autonomy::Full,
            strategy: Strategy::LastWriteWins,
        }
    }

    /// The design's federation model.
    fn demo() -> Directory {
        let mut d = Directory::new();
        d.insert(card("global-control", "global", None, Level::Global, Autonomy::Full));
        d.insert(card(
            "region-a-control",
            "region-a",
            Some("global-control"),
            Level::Regional,
            Autonomy::Full,
        ));
        d.insert(card(
            "edge-zone-a1",
            "edge-zone-a1",
            Some("region-a-control"),
            Level::Local,
            Autonomy::Conditional,
        ));
        d.insert(card(
            "region-b-control",
            "region-b",
            Some("global-control"),
            Level::Regional,
            Autonomy::Full,
        ));
        d.insert(card(
            "edge-zone-b1",
            "edge-zone-b1",
            Some("region-b-control"),
            Level::Local,
            Autonomy::Full,
        ));
        d.insert(card(
            "edge-zone-c",
            "edge-zone-c",
            Some("global-control"),
            Level::Autonomous,
            Autonomy::Full,
        ));
        d
    }

    fn site(s: &str) -> SiteId {
        SiteId::new(s).unwrap()
    }

    fn scope(s: &str) -> Scope {
        Scope::new(s).unwrap()
    }

    #[test]
    fn a_scope_is_held_by_its_owner_its_ancestors_and_its_descendants() {
        let d = demo();
        let ids = |v: Vec<SiteId>| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(
            ids(d.holders(&scope("region-b"))),
            ["edge-zone-b1", "global-control", "region-b-control"]
        );
        assert_eq!(
            ids(d.holders(&scope("edge-zone-a1"))),
            ["edge-zone-a1", "global-control", "region-a-control"]
        );
        assert_eq!(ids(d.holders(&scope("global"))).len(), 6, "every site holds the global scope");
        assert!(d.holders(&scope("nowhere")).is_empty());
    }

    #[test]
    fn relations_follow_the_tree() {
        let d = demo();
        assert_eq!(d.relation(&site("edge-zone-a1"), &scope("edge-zone-a1")), Some(Relation::Own));
        assert_eq!(d.relation(&site("global-control"), &scope("edge-zone-a1")), Some(Relation::Ancestor));
        assert_eq!(
            d.relation(&site("edge-zone-a1"), &scope("region-a")),
            Some(Relation::Descendant { depth: 1 })
        );
        assert_eq!(
            d.relation(&site("edge-zone-a1"), &scope("global")),
            Some(Relation::Descendant { depth: 2 })
        );
        assert_eq!(d.relation(&site("edge-zone-c"), &scope("region-a")), Some(Relation::Unrelated));
        assert_eq!(d.relation(&site("edge-zone-c"), &scope("nowhere")), None);
    }

    #[test]
    fn the_issue_scenarios() {
        let d = demo();
        let policy = Kind::Policy;
        // a1 (conditional) overrides region-a only while isolated.
        assert_eq!(
            d.check_write(&site("edge-zone-a1"), &scope("region-a"), policy, Some(false)).unwrap_err().rule,
            Rule::ConditionalNotIsolated
        );
        assert!(d.check_write(&site("edge-zone-a1"), &scope("region-a"), policy, Some(true)).is_ok());
        // ... and never global.
        assert_eq!(
            d.check_write(&site("edge-zone-a1"), &scope("global"), policy, None).unwrap_err().rule,
            Rule::ConditionalBeyondParent
        );
        // b1 (full) overrides connected or not.
        assert!(d.check_write(&site("edge-zone-b1"), &scope("region-b"), policy, Some(false)).is_ok());
        assert!(d.check_write(&site("edge-zone-b1"), &scope("region-b"), policy, Some(true)).is_ok());
        // c never writes region-a.
        let err = d.check_write(&site("edge-zone-c"), &scope("region-a"), policy, Some(true)).unwrap_err();
        assert_eq!(err.rule, Rule::NotInLineage);
        assert!(err.detail.contains("region-a-control"), "{err}");
        // Ancestors always; releases need can_deploy_versions.
        assert!(
            d.check_write(&site("global-control"), &scope("edge-zone-a1"), Kind::Release, Some(false))
                .is_ok()
        );
        assert_eq!(
            d.check_write(&site("edge-zone-a1"), &scope("edge-zone-a1"), Kind::Rollout, Some(false))
                .unwrap_err()
                .rule,
            Rule::DeployVersions
        );
        assert_eq!(
            d.check_write(&site("ghost"), &scope("global"), policy, None).unwrap_err().rule,
            Rule::UnknownSite
        );
    }

    #[test]
    fn an_isolated_site_without_can_operate_isolated_refuses_every_write() {
        let mut d = demo();
        let mut strict = card(
            "edge-zone-a2",
            "edge-zone-a2",
            Some("region-a-control"),
            Level::Local,
            Autonomy::Conditional,
        );
        strict.can_operate_isolated = false;
        d.insert(strict);
        let own = scope("edge-zone-a2");
        assert!(d.check_write(&site("edge-zone-a2"), &own, Kind::Policy, Some(false)).is_ok());
        let err = d.check_write(&site("edge-zone-a2"), &own, Kind::Policy, Some(true)).unwrap_err();
        assert_eq!(err.rule, Rule::OperateIsolated);
        assert!(err.detail.contains("can_operate_isolated: false"), "{err}");
        assert!(
            err.detail.starts_with("site `edge-zone-a2` (local authority, conditional autonomy) is isolated"),
            "the refusal names the site, its level and its autonomy: {err}"
        );
    }

    #[test]
    fn a_site_without_modify_policies_or_autonomy_never_overrides() {
        let mut d = demo();
        let mut no_modify =
            card("edge-zone-a2", "edge-zone-a2", Some("region-a-control"), Level::Local, Autonomy::Full);
        no_modify.can_modify_policies = false;
        d.insert(no_modify);
        let region = scope("region-a");
        assert_eq!(
            d.check_write(&site("edge-zone-a2"), &region, Kind::Policy, Some(true)).unwrap_err().rule,
            Rule::ModifyPolicies
        );
        d.insert(card(
            "edge-zone-a2",
            "edge-zone-a2",
            Some("region-a-control"),
            Level::Local,
            Autonomy::None,
        ));
        assert_eq!(
            d.check_write(&site("edge-zone-a2"), &region, Kind::Policy, Some(true)).unwrap_err().rule,
            Rule::NoAutonomy
        );
    }

    #[test]
    fn a_parent_cycle_in_bad_data_terminates() {
        let mut d = Directory::new();
        d.insert(card("a", "a", Some("b"), Level::Local, Autonomy::Full));
        d.insert(card("b", "b", Some("a"), Level::Local, Autonomy::Full));
        assert_eq!(d.ancestors(&site("a")).len(), 2);
        assert!(d.relation(&site("a"), &scope("b")).is_some());
    }
}
