//! Reading object documents from a file for `souverix apply`: YAML (several documents
//! separated by `---`) or JSON (one document, an array of them, or several one after another).

use anyhow::{Context, anyhow};
use model::{ObjectDocument, ValidDocument};
use serde::Deserialize;

/// Parses and validates every document in `text`; `source` names the file in messages. Either
/// every document is valid, or nothing is returned (so `apply` changes nothing on bad input).
pub fn parse(text: &str, source: &str) -> anyhow::Result<Vec<(ObjectDocument, ValidDocument)>> {
    let trimmed = text.trim_start();
    let values = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        json_values(text, source)?
    } else {
        yaml_values(text, source)?
    };
    if values.is_empty() {
        return Err(anyhow!("{source} holds no object documents"));
    }
    let mut documents = Vec::with_capacity(values.len());
    for (index, value) in values.into_iter().enumerate() {
        let position = index + 1;
        let document: ObjectDocument = serde_json::from_value(value)
            .with_context(|| format!("{source}: document {position} is not an object document"))?;
        let valid = document.validate().with_context(|| {
            format!("{source}: document {position} ({} {})", document.kind, document.metadata.name)
        })?;
        documents.push((document, valid));
    }
    Ok(documents)
}

fn json_values(text: &str, source: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut values = Vec::new();
    for value in serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>() {
        let value = value.with_context(|| format!("{source} is not valid JSON"))?;
        match value {
            serde_json::Value::Array(items) => values.extend(items),
            other => values.push(other),
        }
    }
    Ok(values)
}

fn yaml_values(text: &str, source: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut values = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let value = serde_json::Value::deserialize(document)
            .with_context(|| format!("{source}: YAML document {} is not valid", index + 1))?;
        if !value.is_null() {
            values.push(value);
        }
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_several_yaml_documents() {
        let text = "apiVersion: souverix/v1\nkind: Policy\nmetadata: {name: a, scope: global}\nspec: {x: 1}\n---\napiVersion: souverix/v1\nkind: Release\nmetadata: {name: b, scope: region-a}\n";
        let docs = parse(text, "f.yaml").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].1.key.to_string(), "Release/region-a/b");
    }

    #[test]
    fn reads_a_json_array_and_concatenated_objects() {
        let one = r#"{"apiVersion":"souverix/v1","kind":"Policy","metadata":{"name":"a","scope":"global"}}"#;
        assert_eq!(parse(&format!("[{one},{one}]"), "f.json").unwrap().len(), 2);
        assert_eq!(parse(&format!("{one}\n{one}\n{one}"), "f.json").unwrap().len(), 3);
    }

    #[test]
    fn names_the_bad_document() {
        let text = "apiVersion: souverix/v1\nkind: Policy\nmetadata: {name: a, scope: global}\n---\napiVersion: souverix/v1\nkind: Policy\nmetadata: {name: a/b, scope: global}\n";
        let err = format!("{:#}", parse(text, "f.yaml").unwrap_err());
        assert!(err.contains("document 2") && err.contains("metadata.name"), "{err}");
    }
}
