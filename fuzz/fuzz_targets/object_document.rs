//! The body of `PUT /v1/objects/{kind}/{scope}/{name}` as the server reads it
//! (`ObjectDocument::parse_body`) on arbitrary bytes: an error or a valid document, never a
//! panic. An accepted document, written back as the minimal JSON a client sends, parses to the
//! same key and content, and its key reads back from the URL's three parts.

#![no_main]

use libfuzzer_sys::fuzz_target;
use model::{API_VERSION, ContentHash, DocumentMetadata, ObjectDocument, ObjectKey};

fuzz_target!(|data: &[u8]| {
    let Ok(valid) = ObjectDocument::parse_body(data) else { return };
    let key = &valid.key;
    let from_url = ObjectKey::parse(key.kind.as_str(), key.scope.as_str(), key.name.as_str())
        .expect("a document's key reads back from a URL's parts");
    assert_eq!(&from_url, key);
    let document = ObjectDocument {
        api_version: API_VERSION.to_owned(),
        kind: key.kind.as_str().to_owned(),
        metadata: DocumentMetadata {
            name: key.name.to_string(),
            scope: key.scope.to_string(),
            labels: valid.labels.clone(),
            ..DocumentMetadata::default()
        },
        spec: valid.spec.clone(),
    };
    let body = serde_json::to_vec(&document).expect("a document serializes");
    let again = ObjectDocument::parse_body(&body).expect("a written-back document parses");
    assert_eq!(again, valid, "a document survives being written back");
    let _ = ContentHash::of(key, &valid.labels, &valid.spec, false);
});
