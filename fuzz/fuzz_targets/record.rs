//! One record of the programs, as read from the buffer: `udptrace::invariants::record::check`.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| udptrace::invariants::record::check(bytes));
