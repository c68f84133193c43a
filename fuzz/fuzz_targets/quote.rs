//! A record's DNS payload, an ICMP error's quote: its length fields, then its bytes:
//! `udptrace::invariants::quote::check`.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| udptrace::invariants::quote::check(bytes));
