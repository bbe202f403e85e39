//! The `souverix` binary end to end: real server processes on 127.0.0.1 over real SQLite files,
//! driven by the real CLI.

mod config_check;
mod durability;
mod harness;
mod operate;
