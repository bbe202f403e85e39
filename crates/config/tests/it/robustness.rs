//! No input makes the parser panic: every mangled file is either a config or an error.

use crate::{fixture, parse};

/// Replaces the byte at each position with characters that matter to YAML, and cuts the
/// file at each position: thousands of broken files, all of which must be handled.
#[test]
fn mangled_files_are_errors_not_panics() {
    let mut errors = 0;
    for name in ["seed-site.yaml", "full-site.yaml"] {
        let text = std::fs::read_to_string(fixture(name)).expect("fixture");
        let bytes = text.as_bytes();
        for i in 0..bytes.len() {
            let cut = String::from_utf8_lossy(&bytes[..i]);
            errors += usize::from(parse(&cut).is_err());
            for replacement in [b':', b' ', b'[', b'{', b'"', b'-', b'\n', b'&', b'*', b'!', b'x', b'0'] {
                let mut mangled = bytes.to_vec();
                mangled[i] = replacement;
                errors += usize::from(parse(&String::from_utf8_lossy(&mangled)).is_err());
            }
        }
    }
    assert!(errors > 1000, "most mangled files are refused ({errors})");
}

#[test]
fn deeply_nested_and_self_referencing_documents_are_refused() {
    let deep = format!("Site:\n  id: {}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    assert!(parse(&deep).is_err());
    let laughs = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]\ng: [*f, *f, *f, *f, *f, *f, *f, *f, *f]\n";
    assert!(parse(laughs).is_err());
}
