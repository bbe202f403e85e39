//! The operator commands that talk to a site over HTTP.

use std::io::Read;
use std::path::Path;

use anyhow::Context;
use model::{ObjectKey, ObjectName, Scope};

use crate::client::Client;
use crate::manifest;
use crate::output::{Format, Table, print};

pub async fn apply(client: &Client, file: &Path) -> anyhow::Result<()> {
    let (text, source) = if file == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("failed to read standard input")?;
        (text, "standard input".to_owned())
    } else {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("failed to read {}", file.display()))?;
        (text, file.display().to_string())
    };
    let documents = manifest::parse(&text, &source)?;
    for (document, valid) in documents {
        let written = client
            .put(&valid.key, &document, None)
            .await
            .with_context(|| format!("{} was not applied", valid.key))?;
        let version = written.document.metadata.version.unwrap_or_default();
        let verb = if written.created { "created" } else { "updated" };
        println!("{} {verb} (version {version})", valid.key);
    }
    Ok(())
}

/// The object's key, with the scope defaulting to that of the site answering.
async fn key(client: &Client, kind: &str, name: &str, scope: Option<String>) -> anyhow::Result<ObjectKey> {
    let scope = match scope {
        Some(s) => s,
        None => client.site().await?.scope,
    };
    Ok(ObjectKey::new(kind.parse()?, Scope::new(scope)?, ObjectName::new(name)?))
}

pub async fn get(
    client: &Client,
    kind: &str,
    name: Option<&str>,
    scope: Option<String>,
    include_deleted: bool,
    output: Format,
) -> anyhow::Result<()> {
    let kind_parsed: model::Kind = kind.parse()?;
    if let Some(name) = name {
        let key = key(client, kind, name, scope).await?;
        let document = client.get(&key).await?;
        return print(output, &document, || {
            let mut t = Table::new(vec!["KIND", "SCOPE", "NAME", "VERSION", "ORIGIN", "UPDATED"], "");
            t.row(row(&document));
            t
        });
    }
    let mut query = vec![("kind", kind_parsed.to_string())];
    if let Some(scope) = scope {
        query.push(("scope", Scope::new(scope)?.to_string()));
    }
    if include_deleted {
        query.push(("include_deleted", "true".to_owned()));
    }
    // Read every page: lists are bounded per page, and the loop by the number of objects.
    let mut items = Vec::new();
    loop {
        let page = client.list(&query).await?;
        items.extend(page.items);
        match page.next {
            Some(next) => {
                query.retain(|(k, _)| *k != "after");
                query.push(("after", next));
            }
            None => break,
        }
    }
    print(output, &items, || {
        let mut t = Table::new(vec!["KIND", "SCOPE", "NAME", "VERSION", "ORIGIN", "UPDATED"], "no objects");
        for d in &items {
            t.row(row(d));
        }
        t
    })
}

fn row(d: &model::ObjectDocument) -> Vec<String> {
    let m = &d.metadata;
    let name = if m.deleted == Some(true) { format!("{} (deleted)", m.name) } else { m.name.clone() };
    vec![
        d.kind.clone(),
        m.scope.clone(),
        name,
        m.version.clone().unwrap_or_default(),
        m.origin.clone().unwrap_or_default(),
        m.updated_at.clone().unwrap_or_default(),
    ]
}

pub async fn delete(
    client: &Client,
    kind: &str,
    name: &str,
    scope: Option<String>,
    if_match: Option<&str>,
) -> anyhow::Result<()> {
    let key = key(client, kind, name, scope).await?;
    let tombstone = client.delete(&key, if_match).await?;
    println!("{key} deleted (version {})", tombstone.metadata.version.unwrap_or_default());
    Ok(())
}

pub async fn history(
    client: &Client,
    kind: &str,
    name: &str,
    scope: Option<String>,
    output: Format,
) -> anyhow::Result<()> {
    let key = key(client, kind, name, scope).await?;
    let page = client.history(&key).await?;
    print(output, &page, || {
        let mut t =
            Table::new(vec!["SEQ", "VERSION", "ORIGIN", "AUTHOR", "TIME", "CHANGE", "HASH"], "no versions");
        for item in &page.items {
            t.row(vec![
                item.seq.to_string(),
                item.version.clone(),
                item.origin.clone(),
                item.author.clone(),
                item.time.clone(),
                if item.deleted { "delete".into() } else { "write".into() },
                item.content_hash.chars().take(12).collect(),
            ]);
        }
        t
    })
}

pub async fn audit(
    client: &Client,
    tail: usize,
    after: Option<u64>,
    limit: usize,
    output: Format,
) -> anyhow::Result<()> {
    let query = match after {
        Some(after) => vec![("after", after.to_string()), ("limit", limit.to_string())],
        None => vec![("tail", tail.to_string())],
    };
    let page = client.audit(&query).await?;
    print(output, &page, || {
        let mut t = Table::new(
            vec!["SEQ", "TIME", "ACTOR", "ACTION", "OBJECT", "VERSION", "OUTCOME"],
            "no audit entries",
        );
        for item in &page.items {
            t.row(vec![
                item.seq.to_string(),
                item.time.clone(),
                item.actor.clone(),
                item.action.clone(),
                item.object.clone().unwrap_or_default(),
                item.version.clone().unwrap_or_default(),
                item.outcome.clone(),
            ]);
        }
        t
    })
}

/// Seconds as the seed writes durations: `42s`, `12.5m`, `3.75h`.
pub fn human_age(seconds: f64) -> String {
    let trim = |v: f64| {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    };
    if seconds < 60.0 {
        format!("{}s", seconds.round() as u64)
    } else if seconds < 3600.0 {
        format!("{}m", trim(seconds / 60.0))
    } else {
        format!("{}h", trim(seconds / 3600.0))
    }
}

pub async fn sync_status(client: &Client, now: bool, output: Format) -> anyhow::Result<()> {
    let status = client.sync_status(now).await?;
    print(output, &status, || {
        let mut t = Table::new(
            vec!["PEER", "DIRECTION", "MODE", "STATE", "PENDING", "DEBT", "LAST SYNC", "ERROR"],
            "this site has no links",
        );
        for l in &status.links {
            let state = if l.signal == replication::Signal::Up {
                l.state.to_string()
            } else {
                format!("{} (signal {})", l.state, l.signal.as_str())
            };
            t.row(vec![
                l.peer.clone(),
                format!("{:?}", l.direction).to_lowercase(),
                format!("{} every {}", l.mode, l.frequency),
                state,
                format!("{} ({} B)", l.pending, l.pending_bytes),
                l.debt_seconds.map(human_age).unwrap_or_else(|| "-".into()),
                l.last_sync_age_seconds
                    .map(|a| format!("{} ago", human_age(a)))
                    .unwrap_or_else(|| "never".into()),
                l.last_error.clone().unwrap_or_default(),
            ]);
        }
        t
    })
}

pub async fn link(client: &Client, peer: &str, state: &str) -> anyhow::Result<()> {
    let link = client.signal(peer, state).await?;
    println!("link with {} is {} (signal {})", link.peer, link.state, link.signal.as_str());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::human_age;

    #[test]
    fn ages_read_like_the_seed() {
        assert_eq!(human_age(42.4), "42s");
        assert_eq!(human_age(750.0), "12.5m");
        assert_eq!(human_age(13_500.0), "3.75h");
        assert_eq!(human_age(7200.0), "2h");
    }
}
