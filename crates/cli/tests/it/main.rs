//! The `souverix` binary end to end: real server processes on 127.0.0.1 over real SQLite files,
//! driven by the real CLI.

mod authority;
mod browser;
mod chaos;
mod config_check;
mod conflicts;
mod durability;
mod fed_harness;
mod federation;
mod federation_processes;
mod fleet;
mod harness;
mod operate;
mod ui;
