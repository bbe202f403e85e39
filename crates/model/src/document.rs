//! Object documents, shaped as operators of Kubernetes-style tools expect:
//! `apiVersion`, `kind`, `metadata: {name, scope, labels}`, `spec`. What the server adds
//! (version, origin, timestamps) comes back under `metadata`, and is ignored on input so a
//! document read from the server can be edited and applied again.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    Hlc, IdError, Kind, ObjectKey, ObjectName, Scope, Version, VersionVector, format_rfc3339_millis,
};

/// The only API version of object documents so far.
pub const API_VERSION: &str = "souverix/v1";

const MAX_LABELS: usize = 64;
const MAX_LABEL_KEY: usize = 63;
const MAX_LABEL_VALUE: usize = 256;

/// An object as written by an operator or returned by a site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectDocument {
    pub api_version: String,
    pub kind: String,
    pub metadata: DocumentMetadata,
    #[serde(default = "empty_spec")]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub spec: serde_json::Value,
}

fn empty_spec() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

/// `metadata` of a document. The fields after `labels` are set by the server.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DocumentMetadata {
    pub name: String,
    pub scope: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The current version, also the ETag: `<wall_ms>.<counter>@<origin>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The site that wrote the current version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Who wrote the current version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// When the object's first version was written (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// When the current version was written (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_vector: Option<BTreeMap<String, u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
    /// Present and true on a tombstone (a deleted object's last version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<bool>,
}

/// What is wrong with a document an operator sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error("apiVersion is `{found}`; it must be `{API_VERSION}`")]
    ApiVersion { found: String },
    #[error("kind: {0}")]
    Kind(IdError),
    #[error("metadata.name: {0}")]
    Name(IdError),
    #[error("metadata.scope: {0}")]
    Scope(IdError),
    #[error("metadata.labels: {0}")]
    Label(String),
}

/// A validated document: the identity and the content of one write.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidDocument {
    pub key: ObjectKey,
    pub labels: BTreeMap<String, String>,
    pub spec: serde_json::Value,
}

/// Why a request body is not a valid object document.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the body is not a valid object document: {0}")]
    Syntax(#[from] serde_json::Error),
    #[error(transparent)]
    Invalid(#[from] DocumentError),
}

impl ObjectDocument {
    /// Parses a request body as the API reads one (JSON, one object) and validates it: the
    /// whole of what `PUT /v1/objects/...` does with the bytes before comparing the key with
    /// the URL. Any input is an error or a document, never a panic.
    pub fn parse_body(bytes: &[u8]) -> Result<ValidDocument, BodyError> {
        let document: ObjectDocument = serde_json::from_slice(bytes)?;
        Ok(document.into_valid()?)
    }

    /// Checks everything an operator controls, and returns the object's key and content.
    pub fn validate(&self) -> Result<ValidDocument, DocumentError> {
        let key = self.checked_key()?;
        Ok(ValidDocument { key, labels: self.metadata.labels.clone(), spec: self.spec.clone() })
    }

    /// [`ObjectDocument::validate`], moving the content instead of copying it (a request body,
    /// which has no other use).
    pub fn into_valid(self) -> Result<ValidDocument, DocumentError> {
        let key = self.checked_key()?;
        Ok(ValidDocument { key, labels: self.metadata.labels, spec: self.spec })
    }

    /// The object's key, once the version, kind, name, scope and labels are known to be valid.
    fn checked_key(&self) -> Result<ObjectKey, DocumentError> {
        if self.api_version != API_VERSION {
            return Err(DocumentError::ApiVersion { found: self.api_version.clone() });
        }
        let kind: Kind = self.kind.parse().map_err(DocumentError::Kind)?;
        let name = ObjectName::new(self.metadata.name.clone()).map_err(DocumentError::Name)?;
        let scope = Scope::new(self.metadata.scope.clone()).map_err(DocumentError::Scope)?;
        check_labels(&self.metadata.labels)?;
        Ok(ObjectKey::new(kind, scope, name))
    }
}

fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), DocumentError> {
    if labels.len() > MAX_LABELS {
        return Err(DocumentError::Label(format!(
            "{} labels given; the limit is {MAX_LABELS}",
            labels.len()
        )));
    }
    for (key, value) in labels {
        let key_ok = !key.is_empty()
            && key.len() <= MAX_LABEL_KEY
            && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
        if !key_ok {
            return Err(DocumentError::Label(format!(
                "label key `{key}` must be 1 to {MAX_LABEL_KEY} characters of letters, digits, `-`, `_`, `.` and `/`"
            )));
        }
        if value.len() > MAX_LABEL_VALUE {
            return Err(DocumentError::Label(format!(
                "the value of label `{key}` is {} bytes long; the limit is {MAX_LABEL_VALUE}",
                value.len()
            )));
        }
    }
    Ok(())
}

/// An object as a site holds it: its current version and content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredObject {
    pub key: ObjectKey,
    pub version: Version,
    pub labels: BTreeMap<String, String>,
    pub spec: serde_json::Value,
    /// The timestamp of the object's first version.
    pub created: Hlc,
    /// The object's causal context: the merge of the version vectors of every version of it this
    /// site has accepted. A new local write increments it, so the write dominates everything
    /// seen; a remote version that this does not dominate, and that does not dominate this, is
    /// concurrent (a conflict).
    pub context: VersionVector,
}

impl StoredObject {
    /// The document an operator reads back, with the server's fields under `metadata`.
    pub fn to_document(&self) -> ObjectDocument {
        self.document(self.labels.clone(), self.version.author.clone(), self.spec.clone())
    }

    /// [`StoredObject::to_document`], moving the content instead of copying it (an answer to a
    /// write or a read, which has no further use for the object).
    pub fn into_document(mut self) -> ObjectDocument {
        let labels = std::mem::take(&mut self.labels);
        let author = std::mem::take(&mut self.version.author);
        let spec = self.spec.take();
        self.document(labels, author, spec)
    }

    fn document(
        &self,
        labels: BTreeMap<String, String>,
        author: String,
        spec: serde_json::Value,
    ) -> ObjectDocument {
        let v = &self.version;
        ObjectDocument {
            api_version: API_VERSION.to_owned(),
            kind: self.key.kind.as_str().to_owned(),
            metadata: DocumentMetadata {
                name: self.key.name.to_string(),
                scope: self.key.scope.to_string(),
                labels,
                version: Some(v.id().to_string()),
                origin: Some(v.origin.to_string()),
                author: Some(author),
                created_at: Some(format_rfc3339_millis(self.created.wall_ms)),
                updated_at: Some(format_rfc3339_millis(v.hlc.wall_ms)),
                version_vector: Some(self.context.entries().map(|(s, c)| (s.to_string(), c)).collect()),
                content_hash: Some(v.content_hash.to_string()),
                deleted: v.deleted.then_some(true),
            },
            spec,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(yaml_like: serde_json::Value) -> Result<ObjectDocument, serde_json::Error> {
        serde_json::from_value(yaml_like)
    }

    /// A body whose numbers serde_json's fast float parsing would read inexactly parses to a
    /// document that reads back the same once written out (found by the object document fuzz
    /// target; the input is in `fuzz/corpus/object_document/float-roundtrip.json`).
    #[test]
    fn a_parsed_body_reads_back_the_same_once_written() {
        let body = br#"{"apiVersion":"souverix/v1","kind":"SiteStatus","metadata":{"name":"c","scope":"c"},
            "spec":{"big":10666666660000000000000011486264296503334228,"f":1.066666666e+43}}"#;
        let valid = ObjectDocument::parse_body(body).unwrap();
        let again: serde_json::Value = serde_json::from_str(&valid.spec.to_string()).unwrap();
        assert_eq!(again, valid.spec);
    }

    #[test]
    fn a_policy_document_validates() {
        let d = doc(serde_json::json!({
            "apiVersion": "souverix/v1",
            "kind": "Policy",
            "metadata": {"name": "baseline", "scope": "global", "labels": {"team": "sec"}},
            "spec": {"rules": [1, 2]}
        }))
        .unwrap();
        let valid = d.validate().unwrap();
        assert_eq!(valid.key.to_string(), "Policy/global/baseline");
    }

    #[test]
    fn server_fields_are_accepted_and_unknown_fields_refused() {
        let with_server_fields = doc(serde_json::json!({
            "apiVersion": "souverix/v1", "kind": "Policy",
            "metadata": {"name": "a", "scope": "global", "version": "1.0@global-control"}
        }));
        assert!(with_server_fields.is_ok());
        let err = doc(serde_json::json!({
            "apiVersion": "souverix/v1", "kind": "Policy",
            "metadata": {"name": "a", "scope": "global", "nmae": "typo"}
        }))
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `nmae`"), "{err}");
    }

    #[test]
    fn bad_parts_are_named() {
        let mut d = doc(serde_json::json!({
            "apiVersion": "souverix/v2", "kind": "Policy",
            "metadata": {"name": "a", "scope": "global"}
        }))
        .unwrap();
        assert!(d.validate().unwrap_err().to_string().contains("must be `souverix/v1`"));
        d.api_version = API_VERSION.into();
        d.metadata.name = "a/b".into();
        assert!(d.validate().unwrap_err().to_string().starts_with("metadata.name:"));
        d.metadata.name = "a".into();
        d.kind = "Widget".into();
        assert!(d.validate().unwrap_err().to_string().contains("unknown kind `Widget`"));
    }

    #[test]
    fn a_document_moved_out_of_an_object_is_the_one_copied_from_it() {
        let site = crate::SiteId::new("region-a-control").unwrap();
        let key =
            ObjectKey::new(Kind::Policy, Scope::new("region-a").unwrap(), ObjectName::new("p").unwrap());
        let labels = BTreeMap::from([("team".to_owned(), "edge".to_owned())]);
        let spec = serde_json::json!({ "maxUnavailable": 2 });
        let mut vv = VersionVector::new();
        vv.increment(&site);
        let object = StoredObject {
            version: Version {
                hlc: Hlc::new(1_790_000_000_123, 4),
                origin: site,
                vv: vv.clone(),
                author: "alice".into(),
                content_hash: crate::ContentHash::of(&key, &labels, &spec, false),
                deleted: false,
            },
            key,
            labels,
            spec,
            created: Hlc::new(1_790_000_000_000, 0),
            context: vv,
        };
        let copied = object.to_document();
        assert_eq!(copied.metadata.author.as_deref(), Some("alice"));
        assert_eq!(copied.metadata.labels.get("team").map(String::as_str), Some("edge"));
        assert_eq!(copied.spec["maxUnavailable"], 2);
        assert_eq!(object.into_document(), copied);
    }
}
