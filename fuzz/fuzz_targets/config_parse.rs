//! The site configuration parser (`SiteConfig::parse`) and the federation file parser
//! (`FederationConfig::parse`) on arbitrary UTF-8: an error or a configuration, never a panic.
//! An accepted site configuration, written out with `SiteConfig::to_yaml`, reads back equal.

#![no_main]

use std::path::Path;

use config::{FederationConfig, SiteConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // An absolute base directory, so a relative `data_dir` resolves to an absolute one and the
    // rendered file reads back equal.
    let base = Path::new("/fuzz");
    match SiteConfig::parse(text, "fuzz.yaml", base) {
        Ok(site) => {
            let rendered = site.to_yaml();
            let again = SiteConfig::parse(&rendered, "rendered.yaml", base)
                .unwrap_or_else(|e| panic!("a rendered configuration reads back: {e}\n{rendered}"));
            assert_eq!(
                again.source.as_deref(),
                Some(Path::new("rendered.yaml")),
                "the configuration names its file"
            );
            assert_eq!(
                SiteConfig { source: None, ..again },
                SiteConfig { source: None, ..site },
                "a rendered configuration reads back equal"
            );
        }
        Err(e) => assert!(!e.to_string().is_empty(), "an error says what is wrong"),
    }
    match FederationConfig::parse(text, "fuzz-federation.yaml", base) {
        Ok(federation) => assert!(!federation.sites().is_empty(), "a federation has a root"),
        Err(e) => assert!(!e.to_string().is_empty(), "an error says what is wrong"),
    }
});
