//! Where a few kernel functions' text lies, from `/proc/kallsyms`. The file is several MiB, and the kernel
//! writes each line as it is read (under emulation, seconds): udptrace reads it ([`Snapshot`]) at start-up
//! only where tracepoint mode may attach, for these ranges, and frees it before the programs load; the
//! symbols `pipeline/enrich/cause.rs` keeps are read when the first event needs one.

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
        let text = match HELD.get() {
            Some(Some(held)) => {
                use std::io::{Read as _, Seek as _};
                let mut file = held.lock().map_err(|_| std::io::Error::other("the held /proc/kallsyms is poisoned"))?;
                file.rewind()?;
                let mut text = String::new();
                file.read_to_string(&mut text)?;
                text
            }
            _ => std::fs::read_to_string("/proc/kallsyms")?,
        };
        Ok(Self { modules, text })
    }
}

/// `/proc/kallsyms`, opened once at start, while udptrace may see its addresses (CAP_SYSLOG): the kernel
/// decides at open whether a reader sees them (`kallsyms_open()` keeps `kallsyms_show_value(file->f_cred)`,
/// kernel/kallsyms.c, 5.8+), so the unprivileged tracer reads the table again, when a module
/// loads, through this descriptor, from its start.
static HELD: std::sync::OnceLock<Option<std::sync::Mutex<std::fs::File>>> = std::sync::OnceLock::new();

/// Opens `/proc/kallsyms` for the rest of the session; see [`HELD`].
pub fn hold() {
    HELD.get_or_init(|| std::fs::File::open("/proc/kallsyms").ok().map(std::sync::Mutex::new));
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
        Some(table) => ranges_in(&table.text, names),
        None => [TextRange::default(); N],
    }
}

/// `text` in `/proc/kallsyms` form (`ADDRESS TYPE NAME [MODULE]`), in address order as the kernel lists
/// its own text. Only the lines naming one of `names` and those after them are parsed: the table has
/// hundreds of thousands of lines, and a substring search through it costs a fraction of splitting it.
fn ranges_in<const N: usize>(text: &str, names: [&str; N]) -> [TextRange; N] {
    let mut ranges = [TextRange::default(); N];
    for (range, name) in ranges.iter_mut().zip(names) {
        *range = range_of(text, name).unwrap_or_default();
    }
    ranges
}

/// The first line whose symbol is `name` (or a compiler copy of it, `name.isra.0`) at a shown address, to
/// the next line with a higher address. `None` if there is none, or if its end is never seen (the last
/// symbol is not trusted).
fn range_of(text: &str, name: &str) -> Option<TextRange> {
    let bytes = text.as_bytes();
    for at in memchr::memmem::find_iter(bytes, name.as_bytes()) {
        // The name is a line's third field: a space before it, then the end of the line, a tab before the
        // module, or a compiler suffix after it.
        let after = bytes.get(at + name.len()).copied().unwrap_or(b'\n');
        if at == 0 || bytes[at - 1] != b' ' || !matches!(after, b'\n' | b'\t' | b'.' | b' ') {
            continue;
        }
        let line_start = bytes[..at].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let (Some(start), Some(name_field)) =
            (address(&text[line_start..]), text[line_start..].split_ascii_whitespace().nth(2))
        else {
            continue;
        };
        if start == 0 || base_name(name_field) != name {
            continue;
        }
        let rest = &text[at..];
        let end = rest.lines().skip(1).filter_map(address).find(|&address| address > start)?;
        return Some(TextRange { start, end });
    }
    None
}

/// A line's address, its first field.
fn address(line: &str) -> Option<u64> {
    u64::from_str_radix(line.split_ascii_whitespace().next()?, 16).ok()
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
        let ranges = ranges_in(table, ["sock_dequeue_err_skb", "udp_abort", "missing"]);
        assert_eq!(ranges[0], TextRange { start: 0xffffffff81e3cdf0, end: 0xffffffff81e3cf80 });
        // The zero address of a hidden symbol does not end it; the next real one does.
        assert_eq!(ranges[1], TextRange { start: 0xffffffff82043d90, end: 0xffffffff82043e90 });
        assert_eq!(ranges[2], TextRange::default());
    }

    #[test]
    fn a_compiler_copy_stands_for_its_function() {
        let table = "ffffffff81000000 t __msg_zerocopy_callback.isra.0\nffffffff81000100 T next\n";
        let ranges = ranges_in(table, ["__msg_zerocopy_callback"]);
        assert_eq!(ranges[0], TextRange { start: 0xffffffff81000000, end: 0xffffffff81000100 });
    }

    #[test]
    fn only_the_whole_name_matches() {
        let table = "ffffffff81000000 T udp_abort_other\n\
                     ffffffff81000100 T x_udp_abort\n\
                     ffffffff81000200 t udp_abort\t[some_module]\n\
                     ffffffff81000200 t udp_abort_alias\t[some_module]\n\
                     ffffffff81000300 t next\t[some_module]\n";
        let ranges = ranges_in(table, ["udp_abort", "next"]);
        // An alias at the same address does not end it; the last symbol has no end and is not trusted.
        assert_eq!(ranges, [TextRange { start: 0xffffffff81000200, end: 0xffffffff81000300 }, TextRange::default()]);
    }

    /// Line by line, as the table reads.
    fn every_line(text: &str, name: &str) -> TextRange {
        let lines: Vec<(u64, &str)> = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_ascii_whitespace();
                let address = u64::from_str_radix(fields.next()?, 16).ok()?;
                Some((address, base_name(fields.nth(1)?)))
            })
            .collect();
        let Some(at) = lines.iter().position(|&(address, symbol)| address != 0 && symbol == name) else {
            return TextRange::default();
        };
        let start = lines[at].0;
        lines[at + 1..]
            .iter()
            .find(|&&(address, _)| address > start)
            .map_or_else(TextRange::default, |&(end, _)| TextRange { start, end })
    }

    #[test]
    fn agrees_with_this_hosts_table_read_line_by_line() {
        let Ok(table) = Snapshot::read() else { return };
        let found = text_ranges(Some(&table), udptrace_common::NOT_ICMP_REPORTERS);
        for (range, name) in found.iter().zip(udptrace_common::NOT_ICMP_REPORTERS) {
            assert_eq!(*range, every_line(&table.text, name), "{name}");
        }
    }

    #[test]
    fn hidden_addresses_give_nothing() {
        let table = "0000000000000000 T sock_queue_err_skb\n0000000000000000 T next\n";
        assert_eq!(ranges_in(table, ["sock_queue_err_skb"]), [TextRange::default()]);
    }
}
