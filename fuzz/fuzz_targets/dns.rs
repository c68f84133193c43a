//! A DNS payload, whole, cut and as the start of a longer one: `udptrace::invariants::dns::check`.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| udptrace::invariants::dns::check(bytes));
