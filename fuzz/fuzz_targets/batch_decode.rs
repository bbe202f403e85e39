//! The sync batch decoder, `replication::codec::decode`, on arbitrary bytes: an error or a
//! batch, never a panic; and a batch it accepts encodes to bytes that decode to the same batch.
//!
//! The codec is a leaf of the `replication` crate (it uses `model` and `store` only), so this
//! target compiles its very source file as a module instead of the whole crate, whose HTTP
//! stack would triple the fuzz build.

#![no_main]

#[allow(dead_code)]
#[path = "../../crates/replication/src/codec.rs"]
mod codec;

use codec::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = decode(data) {
        let again = decode(&encode(&batch)).expect("a decoded batch encodes to a valid batch");
        assert_eq!(again, batch, "a decoded batch survives encode and decode unchanged");
    }
});
