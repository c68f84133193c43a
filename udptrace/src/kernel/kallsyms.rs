//! Where a few kernel functions' text lies, from `/proc/kallsyms`. The file is several MiB, and the kernel
//! writes each line as it is read (under emulation, seconds): udptrace reads it once at start-up
//! ([`Snapshot`]), for these ranges and for the symbols `pipeline/enrich/cause.rs` keeps.

use udptrace_common::TextRange;

/// `/proc/kallsyms` as read once, with `/proc/modules` read just before it (a module that comes or goes
/// later changes the symbols; `cause.rs` reads both again then).
pub struct Snapshot {
    pub modules: String,
    pub text: String,
}

impl Snapshot {
    pub fn read() -> std::io::Result<Self> {
        let modules = std::fs::read_to_string("/proc/modules").unwrap_or_default();
        let text = std::fs::read_to_string("/proc/kallsyms")?;
        Ok(Self { modules, text })
    }
}

/// Strips compiler suffixes: `ip_error.cold`, `icmpv4_xrlim_allow.isra.0` -> the base name. The compiler's
/// copies of a function are that function.
pub fn base_name(symbol: &str) -> &str {
    symbol.split_once('.').map_or(symbol, |(base, _)| base)
}

/// The text of each of `names`, in their order: from its address to the next symbol's. Zero for a name the
/// table does not show (absent, or addresses hidden by `kernel.kptr_restrict`), or with no table.
pub fn text_ranges<const N: usize>(table: Option<&Snapshot>, names: [&str; N]) -> [TextRange; N] {
    match table {
        Some(table) => ranges_in(table.text.lines(), names),
        None => [TextRange::default(); N],
    }
}

/// `lines` in `/proc/kallsyms` form (`ADDRESS TYPE NAME [MODULE]`), in address order as the kernel lists
/// its own text.
fn ranges_in<'a, const N: usize>(lines: impl Iterator<Item = &'a str>, names: [&str; N]) -> [TextRange; N] {
    let mut ranges = [TextRange::default(); N];
    // The function whose end is the next symbol's start.
    let mut open: Option<usize> = None;
    for line in lines {
        let mut fields = line.split_ascii_whitespace();
        let (Some(address), Some(_kind), Some(name)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let Ok(address) = u64::from_str_radix(address, 16) else { continue };
        if let Some(index) = open
            && address > ranges[index].start
        {
            ranges[index].end = address;
            open = None;
        }
        if address == 0 {
            continue;
        }
        if let Some(index) = names.iter().position(|n| *n == base_name(name))
            && ranges[index].start == 0
        {
            ranges[index].start = address;
            open = Some(index);
        }
    }
    // A function whose end was never seen (the last symbol) is not trusted.
    for range in &mut ranges {
        if range.end == 0 {
            *range = TextRange::default();
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_function_ends_where_the_next_symbol_starts() {
        let table = "ffffffff81e3cde0 T __pfx_sock_dequeue_err_skb\n\
                     ffffffff81e3cdf0 T sock_dequeue_err_skb\n\
                     ffffffff81e3cf80 T __pfx_skb_foo\n\
                     ffffffff82043d90 T udp_abort\n\
                     0000000000000000 T hidden\n\
                     ffffffff82043e90 t udp_other\n";
        let ranges = ranges_in(table.lines(), ["sock_dequeue_err_skb", "udp_abort", "missing"]);
        assert_eq!(ranges[0], TextRange { start: 0xffffffff81e3cdf0, end: 0xffffffff81e3cf80 });
        // The zero address of a hidden symbol does not end it; the next real one does.
        assert_eq!(ranges[1], TextRange { start: 0xffffffff82043d90, end: 0xffffffff82043e90 });
        assert_eq!(ranges[2], TextRange::default());
    }

    #[test]
    fn a_compiler_copy_stands_for_its_function() {
        let table = "ffffffff81000000 t __msg_zerocopy_callback.isra.0\nffffffff81000100 T next\n";
        let ranges = ranges_in(table.lines(), ["__msg_zerocopy_callback"]);
        assert_eq!(ranges[0], TextRange { start: 0xffffffff81000000, end: 0xffffffff81000100 });
    }

    #[test]
    fn hidden_addresses_give_nothing() {
        let table = "0000000000000000 T sock_queue_err_skb\n0000000000000000 T next\n";
        assert_eq!(ranges_in(table.lines(), ["sock_queue_err_skb"]), [TextRange::default()]);
    }
}
