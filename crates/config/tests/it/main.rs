//! Integration tests of `config`: the seed's snippets, whole files, and every kind of refusal.

mod errors;
mod robustness;
mod seed;
mod site;
mod webhooks;

use std::path::{Path, PathBuf};

use config::{ConfigError, SiteConfig};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn load(name: &str) -> SiteConfig {
    SiteConfig::load(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn load_err(name: &str) -> ConfigError {
    match SiteConfig::load(&fixture(name)) {
        Ok(config) => panic!("{name} was accepted: {config:?}"),
        Err(err) => err,
    }
}

/// Parses `text` as if it were the file `site.yaml` in the current directory.
fn parse(text: &str) -> Result<SiteConfig, ConfigError> {
    SiteConfig::parse(text, "site.yaml", Path::new(""))
}

fn parse_err(text: &str) -> String {
    match parse(text) {
        Ok(config) => panic!("accepted:\n{text}\n{config:?}"),
        Err(err) => err.to_string(),
    }
}

fn site(id: &str) -> model::SiteId {
    model::SiteId::new(id).expect("valid site id")
}
mod federation;
