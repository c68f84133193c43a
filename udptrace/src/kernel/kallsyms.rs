//! Where a few kernel functions' text lies, and which function holds an address, from `/proc/kallsyms`. The
//! file is several MiB, and the kernel writes each line as it is read (under emulation, seconds): udptrace
//! reads it line by line into a compact [`Table`] of text symbols, at start-up only where tracepoint mode may
//! attach, for [`text_ranges`] (no table kept), and when an event first needs a
//! symbol (`pipeline/enrich/cause.rs`).

use std::io::{self, BufRead};

use udptrace_common::TextRange;

/// `/proc/kallsyms`'s text symbols, with `/proc/modules` read just before it (a module that comes or goes
/// later changes the symbols; `cause.rs` reads both again then).
pub struct Snapshot {
    pub modules: String,
    pub table: Table,
}

impl Snapshot {
    pub fn read() -> io::Result<Self> {
        let modules = std::fs::read_to_string("/proc/modules").unwrap_or_default();
        let (table, []) = scan(true, [])?;
        Ok(Self { modules, table })
    }
}

/// The text of each of `names`, in their order: from the first line whose symbol is that name (or a compiler
/// copy of it, `name.isra.0`) at a shown address, to the next line, of any type, with a higher address. Zero
/// for a name the table does not show (absent, or addresses hidden by `kernel.kptr_restrict`), or whose end
/// is never seen (the last symbol is not trusted). Read a line at a time, keeping no table.
pub fn text_ranges<const N: usize>(names: [&str; N]) -> io::Result<[TextRange; N]> {
    scan(false, names).map(|(_, ranges)| ranges)
}

/// `/proc/kallsyms`, through the held descriptor if there is one, read once for a table (if `keep`) and
/// `names`' ranges.
fn scan<const N: usize>(keep: bool, names: [&str; N]) -> io::Result<(Table, [TextRange; N])> {
    const BUFFER: usize = 64 * 1024;
    match HELD.get() {
        Some(Some(held)) => {
            use std::io::Seek as _;
            let mut file = held.lock().map_err(|_| io::Error::other("the held /proc/kallsyms is poisoned"))?;
            file.rewind()?;
            Table::scan(io::BufReader::with_capacity(BUFFER, &*file), keep, names)
        }
        _ => Table::scan(io::BufReader::with_capacity(BUFFER, std::fs::File::open("/proc/kallsyms")?), keep, names),
    }
}

/// Kernel text symbols (`t`, `T`) at shown addresses, sorted by address: their starts, and their names back to
/// back in one string (a module's symbol without its `[module]`), each ending where `ends` says. About 12
/// bytes a symbol and its name's, where a `(u64, Box<str>)` each took over twice that.
#[derive(Default)]
pub struct Table {
    starts: Vec<u64>,
    ends: Vec<u32>,
    names: String,
}

impl Table {
    /// Reads `kallsyms` (`ADDRESS TYPE NAME [MODULE]` lines) a line at a time.
    pub fn parse(kallsyms: impl BufRead) -> io::Result<Self> {
        Self::scan(kallsyms, true, []).map(|(table, [])| table)
    }

    /// Reads `kallsyms` a line at a time into a table (empty unless `keep`), and finds the text of each of
    /// `names` on the way, as [`text_ranges`] says.
    fn scan<const N: usize>(
        mut kallsyms: impl BufRead,
        keep: bool,
        names: [&str; N],
    ) -> io::Result<(Self, [TextRange; N])> {
        let mut table = Self::default();
        let mut ranges = [TextRange::default(); N];
        // A name's start, until a line ends it; `done` once it is found or given up.
        let mut open: [Option<u64>; N] = [None; N];
        let mut done = [false; N];
        let mut line = Vec::with_capacity(256);
        loop {
            line.clear();
            if kallsyms.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            let Ok(line) = std::str::from_utf8(&line) else { continue };
            let mut fields = line.split_ascii_whitespace();
            let Some(address) = fields.next().and_then(|a| u64::from_str_radix(a, 16).ok()) else { continue };
            for ((range, start), done) in ranges.iter_mut().zip(&mut open).zip(&mut done) {
                if let Some(from) = *start
                    && address > from
                {
                    *range = TextRange { start: from, end: address };
                    *start = None;
                    *done = true;
                }
            }
            let (Some(kind), Some(name)) = (fields.next(), fields.next()) else { continue };
            if address == 0 {
                continue;
            }
            if N > 0 {
                let base = base_name(name);
                for ((wanted, start), done) in names.iter().zip(&mut open).zip(&mut done) {
                    if !*done && start.is_none() && base == *wanted {
                        *start = Some(address);
                    }
                }
            }
            if keep && matches!(kind, "t" | "T") {
                table.push(address, name)?;
            }
        }
        table.sort();
        Ok((table, ranges))
    }

    fn push(&mut self, start: u64, name: &str) -> io::Result<()> {
        self.names.push_str(name);
        let end =
            u32::try_from(self.names.len()).map_err(|_| io::Error::other("/proc/kallsyms's names exceed 4 GiB"))?;
        self.starts.push(start);
        self.ends.push(end);
        Ok(())
    }

    fn name(&self, i: usize) -> &str {
        let from = i.checked_sub(1).map_or(0, |before| self.ends[before] as usize);
        &self.names[from..self.ends[i] as usize]
    }

    /// In address order, aliases at one address in their order in the file; then as small as it holds.
    fn sort(&mut self) {
        if !self.starts.is_sorted() {
            let mut order: Vec<u32> = (0..self.starts.len() as u32).collect();
            order.sort_by_key(|&i| self.starts[i as usize]);
            let mut sorted = Self {
                starts: Vec::with_capacity(order.len()),
                ends: Vec::with_capacity(order.len()),
                names: String::with_capacity(self.names.len()),
            };
            for i in order {
                let i = i as usize;
                sorted.names.push_str(self.name(i));
                sorted.starts.push(self.starts[i]);
                sorted.ends.push(sorted.names.len() as u32);
            }
            *self = sorted;
        }
        self.starts.shrink_to_fit();
        self.ends.shrink_to_fit();
        self.names.shrink_to_fit();
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The function containing `addr`, if it is above the first known symbol.
    pub fn function(&self, addr: u64) -> Option<&str> {
        let index = self.starts.partition_point(|&start| start <= addr);
        index.checked_sub(1).map(|i| self.name(i))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges_in<const N: usize>(text: &str, names: [&str; N]) -> [TextRange; N] {
        let (table, ranges) = Table::scan(text.as_bytes(), false, names).unwrap();
        assert!(table.is_empty());
        // The same when the table is kept.
        assert_eq!(Table::scan(text.as_bytes(), true, names).unwrap().1, ranges);
        ranges
    }

    fn table(text: &str) -> Table {
        Table::parse(text.as_bytes()).unwrap()
    }

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

    #[test]
    fn any_symbol_ends_a_range_and_the_first_match_decides() {
        // A data or weak symbol after a function ends it, as it did when the ranges were searched for in the
        // file's text; a later line of the same name does not replace the first.
        let table = "ffffffff81000000 T udp_abort\n\
                     ffffffff81000080 d some_data\n\
                     ffffffff81000100 T udp_abort\n\
                     ffffffff81000200 W next\n";
        assert_eq!(ranges_in(table, ["udp_abort"]), [TextRange { start: 0xffffffff81000000, end: 0xffffffff81000080 }]);
        // The first match without an end gives nothing, though a later one would have one.
        let table = "ffffffffa0000000 t x\t[m]\nffffffff81000000 T x\nffffffff81000100 T y\n";
        assert_eq!(ranges_in(table, ["x"]), [TextRange::default()]);
    }

    #[test]
    fn hidden_addresses_give_nothing() {
        let table = "0000000000000000 T sock_queue_err_skb\n0000000000000000 T next\n";
        assert_eq!(ranges_in(table, ["sock_queue_err_skb"]), [TextRange::default()]);
        let table = self::table(table);
        assert!(table.is_empty());
        assert_eq!(table.function(0xffffffff81000000), None);
    }

    #[test]
    fn an_empty_table_names_nothing() {
        let (table, ranges) = Table::scan(&b""[..], true, ["udp_abort"]).unwrap();
        assert!(table.is_empty());
        assert_eq!(table.function(0), None);
        assert_eq!(table.function(u64::MAX), None);
        assert_eq!(ranges, [TextRange::default()]);
    }

    #[test]
    fn symbolises_text_symbols_without_their_module() {
        let t = table(
            "ffffffff81000000 T _stext\n\
             ffffffff81100000 t bpf_trace_run3\n\
             ffffffff81200000 D some_data\n\
             ffffffff81300000 W weak_function\n\
             ffffffffa0000000 t nf_send_unreach\t[nf_reject_ipv4]\n\
             ffffffffa0001000 T ip_do_fragment.constprop.0\n\
             not a line\n\
             ffffffffa0002000 T\n",
        );
        assert_eq!(t.function(0xffffffff80ffffff), None);
        assert_eq!(t.function(0xffffffff81000000), Some("_stext"));
        assert_eq!(t.function(0xffffffff810fffff), Some("_stext"));
        // Only `t` and `T` are text: the data and the weak symbol belong to the function before them.
        assert_eq!(t.function(0xffffffff81300010), Some("bpf_trace_run3"));
        assert_eq!(t.function(0xffffffffa0000044), Some("nf_send_unreach"));
        assert_eq!(t.function(u64::MAX), Some("ip_do_fragment.constprop.0"));
    }

    #[test]
    fn unsorted_lines_are_sorted_with_their_names() {
        let t = table(
            "ffffffffa0000000 t nf_send_unreach\t[nf_reject_ipv4]\n\
             ffffffff81200000 T __icmp_send\n\
             ffffffffa0001000 t nf_other\t[nf_reject_ipv4]\n\
             ffffffff81000000 T _stext\n\
             ffffffff81200000 T __icmp_send_alias\n\
             ffffffff81300000 T udp_rcv\n",
        );
        assert_eq!(
            t.starts,
            [
                0xffffffff81000000,
                0xffffffff81200000,
                0xffffffff81200000,
                0xffffffff81300000,
                0xffffffffa0000000,
                0xffffffffa0001000
            ]
        );
        assert_eq!(t.function(0xffffffff81000010), Some("_stext"));
        // Aliases keep the file's order: the last one names the address.
        assert_eq!(t.function(0xffffffff81200010), Some("__icmp_send_alias"));
        assert_eq!(t.function(0xffffffff81300010), Some("udp_rcv"));
        assert_eq!(t.function(0xffffffffa0000010), Some("nf_send_unreach"));
        assert_eq!(t.function(0xffffffffa0001010), Some("nf_other"));
        assert_eq!(t.names.len(), t.names.capacity());
    }

    /// Line by line, with the whole file at hand, as the ranges were found before.
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
    fn agrees_with_this_hosts_table_read_whole() {
        let Ok(text) = std::fs::read_to_string("/proc/kallsyms") else { return };
        let Ok(found) = text_ranges(udptrace_common::NOT_ICMP_REPORTERS) else { return };
        let Ok(table) = Snapshot::read() else { return };
        for (range, name) in found.iter().zip(udptrace_common::NOT_ICMP_REPORTERS) {
            assert_eq!(*range, every_line(&text, name), "{name}");
        }
        // Every text symbol names its own address (or an alias's), as a table of (address, name) pairs would.
        let mut symbols: Vec<(u64, &str)> = text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_ascii_whitespace();
                let address = u64::from_str_radix(fields.next()?, 16).ok()?;
                let kind = fields.next()?;
                let name = fields.next()?;
                (address != 0 && matches!(kind, "t" | "T")).then_some((address, name))
            })
            .collect();
        symbols.sort_by_key(|&(address, _)| address);
        assert_eq!(table.table.starts.len(), symbols.len());
        for (i, &(address, name)) in symbols.iter().enumerate() {
            assert_eq!(table.table.starts[i], address);
            assert_eq!(table.table.name(i), name);
        }
    }
}
