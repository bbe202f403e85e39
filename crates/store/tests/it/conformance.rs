//! The whole conformance suite against SQLite, one test per case.

store::conformance_tests!(store::conformance::SqliteHarness::new());

/// `run_all` is what a backend without the macro calls; it must run and pass too.
#[test]
fn run_all_passes() {
    store::conformance::run_all(&mut store::conformance::SqliteHarness::new());
}
