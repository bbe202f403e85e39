//! `Site.webhooks`: where a site POSTs the events operators want to hear about.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The kinds of events a site records, as the event stream and webhooks name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// A version of an object was written here or applied from a peer.
    Write,
    /// A tombstone was written here or applied from a peer.
    Delete,
    /// Two versions of an object were written concurrently, or a conflict changed state.
    Conflict,
    /// A write or a version from a peer was refused by the authority rules.
    Refusal,
    /// A link to a neighbour changed state.
    Link,
}

impl EventKind {
    pub const ALL: [EventKind; 5] =
        [EventKind::Write, EventKind::Delete, EventKind::Conflict, EventKind::Refusal, EventKind::Link];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Write => "write",
            EventKind::Delete => "delete",
            EventKind::Conflict => "conflict",
            EventKind::Refusal => "refusal",
            EventKind::Link => "link",
        }
    }

    /// The kind named `name`, if it is one.
    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The events a webhook receives when its entry does not list any.
pub const DEFAULT_WEBHOOK_EVENTS: [EventKind; 2] = [EventKind::Conflict, EventKind::Refusal];

/// One entry of `Site.webhooks`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// Label-like and unique among the site's webhooks: it names the webhook's deliveries and
    /// its cursor in the store.
    pub name: String,
    /// An `http://` or `https://` URL; each event is POSTed to it as JSON.
    pub url: String,
    /// The kinds of events delivered, in [`EventKind`] order, without repeats; default
    /// [`DEFAULT_WEBHOOK_EVENTS`].
    pub events: Vec<EventKind>,
}

impl WebhookConfig {
    pub fn wants(&self, kind: &str) -> bool {
        self.events.iter().any(|k| k.as_str() == kind)
    }
}

/// `url` if it is an `http://` or `https://` URL with a host, an optional port, an optional path
/// and an optional query; no user info, fragment, spaces or control characters.
pub(crate) fn webhook_url(url: &str) -> Option<String> {
    crate::site::is_http_url(url, true).then(|| url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_are_http_with_a_host_and_may_have_a_query() {
        for good in [
            "http://127.0.0.1:9000/hook",
            "https://hooks.example.com/services/T0/B0?token=abc",
            "http://[::1]:8080/",
            "http://h?x=1",
        ] {
            assert_eq!(webhook_url(good).as_deref(), Some(good), "{good}");
        }
        for bad in [
            "hooks.example.com/x",
            "ftp://h/x",
            "http://",
            "http://:80/x",
            "http://h:0/x",
            "http://h:99999",
            "http://user:pw@h/x",
            "http://h/x#frag",
            "http://h/x y",
            "http://[::1/x",
        ] {
            assert!(webhook_url(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn event_kinds_parse_from_their_names() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventKind::parse("writes"), None);
    }
}
