//! What each parser of untrusted bytes promises, beyond not panicking, as functions that take any bytes and
//! panic when a promise is broken. The bytes come from outside: a datagram's payload (any sender on the
//! network), an ICMP error's quote of one (any router), the programs' records (read from a buffer as raw
//! bytes). The unit tests feed these functions a fixed, seeded set of generated cases (`cases`); the fuzz
//! targets (`fuzz/`, docs/fuzzing.md) feed them whatever libFuzzer finds, for as long as they run. One
//! source of invariants for both.
//!
//! - [`dns::check`]: `dns::parse`, the DNS header and first question from a prefix of a payload.
//! - [`record::check`]: `events::decode`, a record into an event.
//! - [`quote::check`]: `events::record::dns_of`, the DNS payload a record carries, whose length fields
//!   come from the quoted UDP header and the copy.

pub mod dns;
pub mod quote;
pub mod record;

#[cfg(test)]
mod cases;
