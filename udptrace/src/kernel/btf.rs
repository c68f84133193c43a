//! The running kernel's layout, read from its BTF (`/sys/kernel/btf/vmlinux`).
//!
//! Rust eBPF programs get no CO-RE relocations, so every structure member the programs read is located
//! here at start-up and handed to them as [`KernelOffsets`]. A member that moved between kernels is
//! found wherever it is; one that is missing is an error that names it.
//!
//! The reader is udptrace's own and small: the file's bytes, where each type starts, and the named types
//! in name order. Nothing is decoded until asked for, so reading a vmlinux BTF costs its size and little
//! more (a general BTF parser builds every type, several times the file). The format is
//! `include/uapi/linux/btf.h`; the layout section of 7.x kernels, which gives each kind's size, is used
//! where there is one, so that a kind this reader does not know is skipped, not misread.

use std::{cmp::Ordering, path::Path};

use anyhow::{Context as _, Result, anyhow, bail};
use udptrace_common::{CT_TUPLE_LAYOUT, CT_UNKNOWN, ConntrackOffsets, CtTuple, KernelOffsets, RECVERR_UNKNOWN};

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
/// `struct btf_type`: name_off, info, size/type.
const TYPE_HEADER: usize = 12;

/// The kinds this reader looks inside (`BTF_KIND_*`).
mod kind {
    pub const INT: u8 = 1;
    pub const ARRAY: u8 = 3;
    pub const STRUCT: u8 = 4;
    pub const UNION: u8 = 5;
    pub const ENUM: u8 = 6;
    pub const TYPEDEF: u8 = 8;
    pub const VOLATILE: u8 = 9;
    pub const CONST: u8 = 10;
    pub const RESTRICT: u8 = 11;
    pub const FUNC: u8 = 12;
    pub const FUNC_PROTO: u8 = 13;
    pub const VAR: u8 = 14;
    pub const DATASEC: u8 = 15;
    pub const DECL_TAG: u8 = 17;
    pub const TYPE_TAG: u8 = 18;
    pub const ENUM64: u8 = 19;
}

/// Bytes after `struct btf_type` for a kind the layout section does not describe: a fixed part and a part
/// per `vlen` element (`include/uapi/linux/btf.h`, unchanged from 5.2 to 7.3).
fn known_layout(kind: u8) -> Option<(usize, usize)> {
    Some(match kind {
        kind::INT | kind::VAR | kind::DECL_TAG => (4, 0),
        kind::ARRAY => (12, 0),
        kind::STRUCT | kind::UNION | kind::DATASEC | kind::ENUM64 => (0, 12),
        kind::ENUM | kind::FUNC_PROTO => (0, 8),
        // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG.
        2 | 7 | kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::FUNC | 16 | kind::TYPE_TAG => {
            (0, 0)
        }
        _ => return None,
    })
}

/// One type, as stored.
#[derive(Clone, Copy, Debug)]
struct TypeRef {
    /// Where its `struct btf_type` starts in `KernelBtf::data`.
    at: usize,
    name_off: u32,
    kind: u8,
    kind_flag: bool,
    vlen: usize,
    /// `size` or `type`, by kind.
    size_or_type: u32,
}

pub struct KernelBtf {
    data: Vec<u8>,
    strings: std::ops::Range<usize>,
    /// A split BTF's own strings (a module's, read on top of vmlinux's): string offsets from the first
    /// number here are in this range, counted from its start (libbpf's `btf__new_split`: a split BTF numbers
    /// its strings after its base's, and its types after its base's).
    split_strings: Option<(u32, std::ops::Range<usize>)>,
    /// Where each type starts; type id `n` is `starts[n - 1]` (id 0 is `void`).
    starts: Vec<u32>,
    /// Ids of the named structs, unions, typedefs and functions, sorted by name.
    by_name: Vec<u32>,
}

impl KernelBtf {
    pub fn load() -> Result<Self> {
        Self::from_file(Path::new(VMLINUX_BTF))
    }

    pub fn from_file(path: &Path) -> Result<Self> {
        if !path.exists() {
            bail!(
                "{} is missing: this kernel was built without CONFIG_DEBUG_INFO_BTF, which udptrace needs to \
                 find the kernel's structure layout",
                path.display()
            );
        }
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(data).with_context(|| format!("reading {}", path.display()))
    }

    fn parse(data: Vec<u8>) -> Result<Self> {
        let sections = Sections::of(&data, 0)?;
        let starts = sections.type_starts(&data)?;
        let mut btf = Self { data, strings: sections.strings, split_strings: None, starts, by_name: Vec::new() };
        btf.by_name = btf.sorted_names(1..=btf.starts.len() as u32);
        Ok(btf)
    }

    /// A kernel module's BTF (`/sys/kernel/btf/<module>`), read on top of this one, its base: the module's
    /// types refer to vmlinux's by their ids, and pahole left out of the module every type vmlinux has, so a
    /// module's structure is found in either (`named` searches both).
    pub fn with_split(mut self, module: &[u8]) -> Result<Self> {
        if self.split_strings.is_some() {
            bail!("a split BTF is not a base for another");
        }
        let base = self.data.len();
        self.data.extend_from_slice(module);
        let sections = Sections::of(&self.data, base)?;
        let first_string = u32::try_from(self.strings.len()).context("BTF larger than 4 GiB")?;
        self.split_strings = Some((first_string, sections.strings.clone()));
        let first_id = self.starts.len() as u32 + 1;
        let starts = sections.type_starts(&self.data)?;
        self.starts.extend(starts);
        let module_names = self.sorted_names(first_id..=self.starts.len() as u32);
        // Both lists are sorted: merged, the names are still in order.
        let base_names = std::mem::take(&mut self.by_name);
        let mut merged = Vec::with_capacity(base_names.len() + module_names.len());
        let (mut a, mut b) = (base_names.into_iter().peekable(), module_names.into_iter().peekable());
        loop {
            let next = match (a.peek(), b.peek()) {
                (Some(&x), Some(&y)) => {
                    if self.name_of(y) < self.name_of(x) {
                        b.next()
                    } else {
                        a.next()
                    }
                }
                (Some(_), None) => a.next(),
                (None, Some(_)) => b.next(),
                (None, None) => break,
            };
            merged.extend(next);
        }
        self.by_name = merged;
        Ok(self)
    }

    /// The named structs, unions, typedefs and functions among `ids`, sorted by name. Each name is found
    /// once (where it starts in `data`, its length), then sorted by its bytes: finding a name's end in every
    /// comparison was a third of udptrace's start-up.
    fn sorted_names(&self, ids: std::ops::RangeInclusive<u32>) -> Vec<u32> {
        let mut by_name: Vec<(u32, u32, u32)> = ids
            .filter_map(|id| {
                let t = self.type_ref(id)?;
                if t.name_off == 0 || !matches!(t.kind, kind::STRUCT | kind::UNION | kind::TYPEDEF | kind::FUNC) {
                    return None;
                }
                // An empty name (an offset out of range) names nothing.
                let (start, len) = self.string_at(t.name_off)?;
                if len == 0 {
                    return None;
                }
                Some((u32::try_from(start).ok()?, u32::try_from(len).ok()?, id))
            })
            .collect();
        let name = |&(start, len, _): &(u32, u32, u32)| &self.data[start as usize..(start + len) as usize];
        by_name.sort_unstable_by(|a, b| name(a).cmp(name(b)));
        by_name.into_iter().map(|(_, _, id)| id).collect()
    }

    /// The byte offset of `path` (`a.b.c`, anonymous structs and unions searched through) in `struct
    /// outer`.
    pub fn member_offset(&self, outer: &str, path: &str) -> Result<u32> {
        let (offset_bits, ty) = self.member_path(outer, path, false)?;
        if !offset_bits.is_multiple_of(8) || self.is_bitfield_type(ty) {
            bail!("{outer}.{path} is a bitfield in this kernel's BTF");
        }
        Ok(offset_bits / 8)
    }

    /// The bit offset of `path` in `struct outer`, a bitfield or not.
    pub fn member_bit_offset(&self, outer: &str, path: &str) -> Result<u32> {
        self.member_path(outer, path, true).map(|(bits, _)| bits)
    }

    /// The bit offset and type of `path` in `struct outer`; `bitfields`: whether the last may be one.
    fn member_path(&self, outer: &str, path: &str, bitfields: bool) -> Result<(u32, TypeRef)> {
        let mut ty = self.named_struct(outer)?;
        let mut offset_bits = 0u32;
        for name in path.split('.') {
            let (bits, member_ty) = self
                .find_member(ty, name, 0, bitfields)?
                .ok_or_else(|| anyhow!("struct {outer} has no member {path} in this kernel's BTF"))?;
            offset_bits = offset_bits.checked_add(bits).ok_or_else(|| anyhow!("{outer}.{path}: offset overflows"))?;
            ty = member_ty;
        }
        Ok((offset_bits, ty))
    }

    /// The value of the enumerator `name` (of any enum, named or not), if the BTF has one.
    pub fn enumerator(&self, name: &str) -> Option<i64> {
        (1..=self.starts.len() as u32).filter_map(|id| self.type_ref(id)).find_map(|t| {
            let (size, wide) = match t.kind {
                kind::ENUM => (8, false),
                kind::ENUM64 => (12, true),
                _ => return None,
            };
            (0..t.vlen).find_map(|i| {
                let at = t.at + TYPE_HEADER + size * i;
                (self.string(u32_at(&self.data, at)?) == name.as_bytes()).then_some(())?;
                let low = u32_at(&self.data, at + 4)?;
                Some(if wide {
                    i64::from(low) | (i64::from(u32_at(&self.data, at + 8)?) << 32)
                } else {
                    i64::from(low as i32)
                })
            })
        })
    }

    /// Whether the kernel has the tracepoint `name` (every tracepoint has a `btf_trace_<name>` typedef).
    pub fn has_tracepoint(&self, name: &str) -> bool {
        self.named(&format!("btf_trace_{name}")).any(|t| t.kind == kind::TYPEDEF)
    }

    /// The enumerators of `enum name` (an `ENUM` or `ENUM64` of that name), value and name.
    pub fn enum_values(&self, name: &str) -> Vec<(i64, String)> {
        let Some(t) = (1..=self.starts.len() as u32)
            .filter_map(|id| self.type_ref(id))
            .find(|t| matches!(t.kind, kind::ENUM | kind::ENUM64) && self.string(t.name_off) == name.as_bytes())
        else {
            return Vec::new();
        };
        let (size, wide) = if t.kind == kind::ENUM64 { (12, true) } else { (8, false) };
        (0..t.vlen)
            .filter_map(|i| {
                let at = t.at + TYPE_HEADER + size * i;
                let name = String::from_utf8_lossy(self.string(u32_at(&self.data, at)?)).into_owned();
                let low = u32_at(&self.data, at + 4)?;
                let value = if wide {
                    i64::from(low) | (i64::from(u32_at(&self.data, at + 8)?) << 32)
                } else if t.kind_flag {
                    // Unsigned (kind_flag on an enum, 6.0+).
                    i64::from(low)
                } else {
                    i64::from(low as i32)
                };
                Some((value, name))
            })
            .collect()
    }

    /// How many arguments the tracepoint `name` passes: its `btf_trace_<name>` typedef is a pointer to a
    /// function whose first parameter is the tracepoint's own data, then the `TP_PROTO` arguments.
    pub fn tracepoint_args(&self, name: &str) -> Option<usize> {
        let typedef = self.named(&format!("btf_trace_{name}")).find(|t| t.kind == kind::TYPEDEF)?;
        let pointer = self.type_ref(typedef.size_or_type)?;
        let proto = self.type_ref(pointer.size_or_type)?;
        (proto.kind == kind::FUNC_PROTO).then(|| proto.vlen.saturating_sub(1))
    }

    /// Whether `name` is a function in the kernel's BTF (what fentry needs to attach).
    pub fn has_function(&self, name: &str) -> bool {
        self.named(name).any(|t| t.kind == kind::FUNC)
    }

    /// The offsets of every member udptrace's programs read.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets> {
        let sock = |path: &str| self.member_offset("sock", path);
        let recverr4 = self.flag_bit("INET_FLAGS_RECVERR", "inet_sock", "recverr").map(|(bits, _)| bits);
        let recverr6 = self.flag_bit("INET_FLAGS_RECVERR6", "ipv6_pinfo", "recverr");
        Ok(KernelOffsets {
            sk_family: sock("__sk_common.skc_family")?,
            sk_num: sock("__sk_common.skc_num")?,
            sk_dport: sock("__sk_common.skc_dport")?,
            sk_rcv_saddr: sock("__sk_common.skc_rcv_saddr")?,
            sk_daddr: sock("__sk_common.skc_daddr")?,
            sk_v6_rcv_saddr: sock("__sk_common.skc_v6_rcv_saddr")?,
            sk_v6_daddr: sock("__sk_common.skc_v6_daddr")?,
            sk_net: sock("__sk_common.skc_net.net")?,
            sk_err: sock("sk_err")?,
            // A u16 of its own since 5.6 (before, a bitfield: member_offset refuses it).
            sk_protocol: sock("sk_protocol")?,
            sk_state: sock("__sk_common.skc_state")?,
            // An atomic64_t: its counter is its first member.
            sk_cookie: sock("__sk_common.skc_cookie")?,
            sk_socket: sock("sk_socket")?,
            // SOCK_INODE() (include/net/sock.h, unchanged since 2.6): the inode beside the socket.
            socket_to_inode: self
                .member_offset("socket_alloc", "vfs_inode")?
                .checked_sub(self.member_offset("socket_alloc", "socket")?)
                .context("struct socket_alloc has its inode before its socket")?,
            inode_ino: self.member_offset("inode", "i_ino")?,
            net_inum: self.member_offset("net", "ns.inum")?,
            skb_head: self.member_offset("sk_buff", "head")?,
            skb_data: self.member_offset("sk_buff", "data")?,
            skb_network_header: self.member_offset("sk_buff", "network_header")?,
            skb_transport_header: self.member_offset("sk_buff", "transport_header")?,
            skb_dev: self.member_offset("sk_buff", "dev")?,
            skb_sk: self.member_offset("sk_buff", "sk")?,
            dev_net: self.member_offset("net_device", "nd_net.net")?,
            dev_ifindex: self.member_offset("net_device", "ifindex")?,
            recverr4_at: recverr4.map_or(RECVERR_UNKNOWN, |bits| bits / 8),
            recverr4_bit: recverr4.map_or(0, |bits| (bits % 8) as u8),
            recverr6_at: recverr6.map_or(RECVERR_UNKNOWN, |(bits, _)| bits / 8),
            recverr6_bit: recverr6.map_or(0, |(bits, _)| (bits % 8) as u8),
            recverr6_in_pinfo: u8::from(recverr6.is_some_and(|(_, in_pinfo)| in_pinfo)),
            pinet6: self.member_offset("inet_sock", "pinet6").unwrap_or(0),
            _pad0: 0,
            skb_protocol: self.member_offset("sk_buff", "protocol")?,
            skb_iif: self.member_offset("sk_buff", "skb_iif")?,
            skb_tail: self.member_offset("sk_buff", "tail")?,
            // Only with CONFIG_NF_CONNTRACK (include/linux/skbuff.h, 4.11+).
            skb_nfct: self.member_offset("sk_buff", "_nfct").unwrap_or(CT_UNKNOWN),
            sk_rcvbuf: sock("sk_rcvbuf")?,
            // An atomic_t: its counter is its first member.
            sk_rmem_alloc: sock("sk_backlog.rmem_alloc")?,
            task_group_leader: self.member_offset("task_struct", "group_leader")?,
            task_comm: self.member_offset("task_struct", "comm")?,
        })
    }

    /// Where the programs find a connection's members in `struct nf_conn` (include/net/netfilter/
    /// nf_conntrack.h): the two tuples of `tuplehash[IP_CT_DIR_MAX]`, `status`, and `mark` (only with
    /// CONFIG_NF_CONNTRACK_MARK). The tuple must be laid out as the records copy it
    /// ([`CT_TUPLE_LAYOUT`]); a kernel whose tuple differs is an error, not a misread.
    pub fn conntrack_offsets(&self) -> Result<ConntrackOffsets> {
        let tuple_size = self.named_struct("nf_conntrack_tuple")?.size_or_type;
        if tuple_size as usize != size_of::<CtTuple>() {
            bail!("struct nf_conntrack_tuple is {tuple_size} bytes in this kernel, not {}", size_of::<CtTuple>());
        }
        for (path, expected) in CT_TUPLE_LAYOUT {
            let found = self.member_offset("nf_conntrack_tuple", path)?;
            if found != expected {
                bail!("nf_conntrack_tuple.{path} is at byte {found} in this kernel, not {expected}");
            }
        }
        let hash = self.named_struct("nf_conntrack_tuple_hash")?.size_or_type;
        let original = self
            .member_offset("nf_conn", "tuplehash")?
            .checked_add(self.member_offset("nf_conntrack_tuple_hash", "tuple")?)
            .context("nf_conn.tuplehash: offset overflows")?;
        Ok(ConntrackOffsets {
            ready: 1,
            status: self.member_offset("nf_conn", "status")?,
            original,
            reply: original.checked_add(hash).context("nf_conn.tuplehash[1]: offset overflows")?,
            mark: self.member_offset("nf_conn", "mark").unwrap_or(CT_UNKNOWN),
            _pad0: 0,
        })
    }

    /// Whether `struct name` is in this BTF with its members (not only declared).
    pub fn has_struct(&self, name: &str) -> bool {
        self.named_struct(name).is_ok()
    }

    /// The bit offset of a socket flag: in `inet_sock.inet_flags`, as the enumerator `flag` numbers it
    /// (6.6+ for IPv4's, 6.7+ for IPv6's: include/net/inet_sock.h), else the bitfield `old` of `struct
    /// in_struct` (before). Bit numbers count from the least significant bit of each byte (little-endian, as
    /// BTF's bitfield offsets do on the machines udptrace runs on).
    fn flag_bit(&self, flag: &str, in_struct: &str, old: &str) -> Option<(u32, bool)> {
        if let Some(bit) = self.enumerator(flag)
            && let Ok(flags) = self.member_offset("inet_sock", "inet_flags")
        {
            return Some((flags.checked_mul(8)?.checked_add(u32::try_from(bit).ok()?)?, false));
        }
        self.member_bit_offset(in_struct, old).ok().map(|bits| (bits, in_struct != "inet_sock"))
    }

    fn type_ref(&self, id: u32) -> Option<TypeRef> {
        let at = *self.starts.get(usize::try_from(id).ok()?.checked_sub(1)?)? as usize;
        let info = u32_at(&self.data, at + 4)?;
        Some(TypeRef {
            at,
            name_off: u32_at(&self.data, at)?,
            kind: ((info >> 24) & 0x7f) as u8,
            kind_flag: info >> 31 == 1,
            vlen: (info & 0x00ff_ffff) as usize,
            size_or_type: u32_at(&self.data, at + 8)?,
        })
    }

    /// A string of the string sections; empty if the offset is out of them.
    fn string(&self, offset: u32) -> &[u8] {
        self.string_at(offset).map_or(&[][..], |(start, len)| &self.data[start..start + len])
    }

    /// Where the string at `offset` starts in `data`, and its length; `None` out of the sections.
    fn string_at(&self, offset: u32) -> Option<(usize, usize)> {
        let (section, offset) = match &self.split_strings {
            Some((first, section)) if offset >= *first => (section, offset - first),
            _ => (&self.strings, offset),
        };
        let start = section.start.checked_add(offset as usize)?;
        let bytes = self.data.get(start..section.end)?;
        Some((start, bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len())))
    }

    fn name_of(&self, id: u32) -> &[u8] {
        self.type_ref(id).map_or(&[][..], |t| self.string(t.name_off))
    }

    /// The named structs, unions, typedefs and functions called `name`.
    fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = TypeRef> + 'a {
        let name = name.as_bytes();
        let first = self.by_name.partition_point(|&id| self.name_of(id).cmp(name) == Ordering::Less);
        self.by_name[first..]
            .iter()
            .take_while(move |&&id| self.name_of(id) == name)
            .filter_map(|&id| self.type_ref(id))
    }

    fn named_struct(&self, name: &str) -> Result<TypeRef> {
        self.named(name)
            .find(|t| t.kind == kind::STRUCT && t.size_or_type > 0)
            .ok_or_else(|| anyhow!("struct {name} is not in this kernel's BTF"))
    }

    /// Looks `name` up among the members of `ty` (a struct or union, through typedefs and qualifiers),
    /// descending into anonymous members. Returns the member's bit offset and its type.
    fn find_member(&self, ty: TypeRef, name: &str, depth: usize, bitfields: bool) -> Result<Option<(u32, TypeRef)>> {
        if depth > 16 {
            bail!("BTF nests anonymous members deeper than 16");
        }
        let ty = self.strip(ty)?;
        if !matches!(ty.kind, kind::STRUCT | kind::UNION) {
            return Ok(None);
        }
        for index in 0..ty.vlen {
            let at = ty.at + TYPE_HEADER + 12 * index;
            let (Some(name_off), Some(type_id), Some(offset)) =
                (u32_at(&self.data, at), u32_at(&self.data, at + 4), u32_at(&self.data, at + 8))
            else {
                bail!("truncated BTF struct");
            };
            // With kind_flag, the offset's top byte is the bitfield size (`BTF_MEMBER_BITFIELD_SIZE`).
            let (bit_offset, bitfield) =
                if ty.kind_flag { (offset & 0x00ff_ffff, offset >> 24 != 0) } else { (offset, false) };
            let member_ty = self.type_ref(type_id).ok_or_else(|| anyhow!("BTF member of unknown type {type_id}"))?;
            let member_name = self.string(name_off);
            if member_name == name.as_bytes() {
                if bitfield && !bitfields {
                    bail!("member {name} is a bitfield in this kernel's BTF");
                }
                return Ok(Some((bit_offset, member_ty)));
            }
            if member_name.is_empty()
                && let Some((bits, found)) = self.find_member(member_ty, name, depth + 1, bitfields)?
            {
                return Ok(bit_offset.checked_add(bits).map(|total| (total, found)));
            }
        }
        Ok(None)
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn strip(&self, mut ty: TypeRef) -> Result<TypeRef> {
        for _ in 0..32 {
            if !matches!(ty.kind, kind::TYPEDEF | kind::VOLATILE | kind::CONST | kind::RESTRICT | kind::TYPE_TAG) {
                return Ok(ty);
            }
            ty = self.type_ref(ty.size_or_type).ok_or_else(|| anyhow!("BTF refers to unknown type"))?;
        }
        bail!("BTF qualifiers nest deeper than 32")
    }

    /// An integer narrower than its storage: a bitfield in a struct without kind_flag.
    fn is_bitfield_type(&self, ty: TypeRef) -> bool {
        let Ok(ty) = self.strip(ty) else { return false };
        ty.kind == kind::INT
            && u32_at(&self.data, ty.at + TYPE_HEADER).is_some_and(|encoding| {
                let bits = encoding & 0xff;
                let offset = (encoding >> 16) & 0xff;
                offset != 0 || bits != ty.size_or_type * 8
            })
    }
}

/// Where a BTF's sections are, the BTF starting at `base` in `data`.
struct Sections {
    types: std::ops::Range<usize>,
    strings: std::ops::Range<usize>,
    /// 7.x: `struct btf_layout` {info_sz, elem_sz, flags} per kind, when the header is long enough.
    layout: Option<std::ops::Range<usize>>,
}

impl Sections {
    fn of(data: &[u8], base: usize) -> Result<Self> {
        let word = |at: usize| u32_at(data, base + at).ok_or_else(|| anyhow!("truncated BTF header"));
        if u16_at(data, base) != Some(MAGIC) {
            bail!("not BTF in this machine's byte order");
        }
        let header_len = word(4)? as usize;
        let section = |off: usize, len: usize| -> Result<std::ops::Range<usize>> {
            let start = base
                .checked_add(header_len)
                .and_then(|at| at.checked_add(word(off).ok()? as usize))
                .ok_or_else(|| anyhow!("bad BTF header"))?;
            let end = start.checked_add(word(len)? as usize).ok_or_else(|| anyhow!("bad BTF header"))?;
            if end > data.len() {
                bail!("a BTF section runs past the end of the file");
            }
            Ok(start..end)
        };
        Ok(Self {
            types: section(8, 12)?,
            strings: section(16, 20)?,
            layout: if header_len >= 32 { Some(section(24, 28)?) } else { None },
        })
    }

    /// Bytes after `struct btf_type` for `kind`: a fixed part and a part per element.
    fn size_of_kind(&self, data: &[u8], kind: u8) -> Option<(usize, usize)> {
        if let Some(layout) = &self.layout {
            let at = layout.start + 4 * usize::from(kind);
            if at + 4 <= layout.end {
                return Some((usize::from(data[at]), usize::from(data[at + 1])));
            }
        }
        known_layout(kind)
    }

    /// Where each type of the types section starts in `data`.
    fn type_starts(&self, data: &[u8]) -> Result<Vec<u32>> {
        let mut starts = Vec::with_capacity(self.types.len() / 40);
        let mut at = self.types.start;
        while at < self.types.end {
            let info = u32_at(data, at + 4).ok_or_else(|| anyhow!("truncated BTF type"))?;
            let kind = ((info >> 24) & 0x7f) as u8;
            let vlen = (info & 0x00ff_ffff) as usize;
            let (fixed, per_element) =
                self.size_of_kind(data, kind).ok_or_else(|| anyhow!("BTF kind {kind} is unknown"))?;
            starts.push(u32::try_from(at).context("BTF larger than 4 GiB")?);
            at += TYPE_HEADER + fixed + per_element * vlen;
        }
        if at != self.types.end {
            bail!("the last BTF type runs past its section");
        }
        Ok(starts)
    }
}

fn u16_at(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(data.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(data.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs against the machine's own kernel BTF where there is one: the offsets must be plausible.
    #[test]
    fn resolves_offsets_from_the_running_kernel() {
        let Ok(btf) = KernelBtf::load() else {
            eprintln!("skipped: {VMLINUX_BTF} is not readable here");
            return;
        };
        let off = btf.kernel_offsets().expect("offsets");
        // struct sock_common starts struct sock: the 4-tuple sits in its first 16 bytes.
        assert_eq!(off.sk_daddr, 0);
        assert_eq!(off.sk_rcv_saddr, 4);
        assert!(off.sk_err > off.sk_family);
        assert!(off.task_group_leader > 0 && off.task_comm > 0, "{off:?}");
        assert!(btf.has_tracepoint("inet_sk_error_report"));
        assert!(!btf.has_tracepoint("no_such_tracepoint_here"));
        assert!(btf.has_function("__udp4_lib_err"));
        assert!(!btf.has_function("sock"));
        assert!(btf.member_offset("sock", "no_such_member").is_err());
        // skb:kfree_skb gained its reason in 5.17 and its socket in 6.11.
        let args = btf.tracepoint_args("kfree_skb").expect("skb:kfree_skb");
        assert!((2..=4).contains(&args), "kfree_skb passes {args} arguments");
        if args >= 3 {
            let reasons = btf.enum_values("skb_drop_reason");
            assert!(reasons.iter().any(|(_, name)| name == "SKB_DROP_REASON_NO_SOCKET"), "{reasons:?}");
        }
        assert!(btf.tracepoint_args("no_such_tracepoint_here").is_none());
    }

    /// Where conntrack is built in, or its module is loaded here, the running kernel's `struct nf_conn`: the
    /// reply tuple one `nf_conntrack_tuple_hash` (a list node and a tuple) after the original.
    #[test]
    fn resolves_conntrack_offsets_from_the_running_kernel() {
        let Ok(btf) = KernelBtf::load() else {
            eprintln!("skipped: {VMLINUX_BTF} is not readable here");
            return;
        };
        match crate::kernel::conntrack::offsets(btf).expect("conntrack's offsets") {
            None => eprintln!("skipped: conntrack is neither built in nor loaded here"),
            Some(off) => {
                assert_eq!(off.ready, 1);
                assert_eq!(off.reply - off.original, 16 + 40, "{off:?}");
                assert!(off.status > off.reply, "{off:?}");
            }
        }
    }

    /// A small BTF, written the way the kernel writes one.
    struct Writer {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Writer {
        fn new() -> Self {
            Self { types: Vec::new(), strings: vec![0], next_id: 1 }
        }

        /// For a BTF split on top of `base`: its ids and strings numbered after the base's.
        fn split(base: &Writer) -> Self {
            Self { types: Vec::new(), strings: Vec::new(), next_id: base.next_id }
        }

        /// A string offset as a split BTF numbers it, from the end of `base`'s strings.
        fn split_name(&mut self, base: &Writer, name: &str) -> u32 {
            let at = self.strings.len() as u32 + base.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            at
        }

        fn name(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let at = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            at
        }

        fn push(&mut self, name: &str, kind: u8, kind_flag: bool, vlen: u32, size_or_type: u32, rest: &[u32]) -> u32 {
            let name_off = self.name(name);
            let info = (u32::from(kind) << 24) | vlen | (u32::from(kind_flag) << 31);
            for word in [name_off, info, size_or_type].iter().chain(rest) {
                self.types.extend_from_slice(&word.to_ne_bytes());
            }
            self.next_id += 1;
            self.next_id - 1
        }

        fn member(&mut self, name: &str, type_id: u32, offset: u32) -> [u32; 3] {
            [self.name(name), type_id, offset]
        }

        /// With `layout`, a 7.x header and a layout section that describes kind 20 (unknown here) as 4
        /// bytes plus 8 per element.
        fn finish(self, layout: bool) -> Vec<u8> {
            let header_len: u32 = if layout { 32 } else { 24 };
            let mut layout_section = Vec::new();
            if layout {
                for kind in 0..=20u8 {
                    let (fixed, each) = if kind == 20 { (4, 8) } else { known_layout(kind).unwrap_or((0, 0)) };
                    layout_section.extend_from_slice(&[fixed as u8, each as u8, 0, 0]);
                }
            }
            let types_len = self.types.len() as u32;
            let strings_len = self.strings.len() as u32;
            let mut out = Vec::new();
            out.extend_from_slice(&MAGIC.to_ne_bytes());
            out.extend_from_slice(&[1, 0]);
            let mut header = vec![header_len, 0, types_len, types_len, strings_len];
            if layout {
                header.extend([types_len + strings_len, layout_section.len() as u32]);
            }
            for word in header {
                out.extend_from_slice(&word.to_ne_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out.extend_from_slice(&layout_section);
            out
        }
    }

    /// `struct outer { int a; union { struct { int pad; int deep; }; }; const int_t c; int bits:3; }`,
    /// a typedef, a function, a tracepoint typedef, and, with `unknown_kind`, a type of a kind 20.
    fn sample(layout: bool) -> Vec<u8> {
        let mut w = Writer::new();
        let int = w.push("int", kind::INT, false, 0, 4, &[32]);
        let int3 = w.push("int", kind::INT, false, 0, 4, &[3]);
        let int_t = w.push("int_t", kind::TYPEDEF, false, 0, int, &[]);
        let const_int = w.push("", kind::CONST, false, 0, int_t, &[]);
        if layout {
            w.push("future", 20, false, 2, 0, &[0, 0, 0, 0, 0]);
        }
        let pad = w.member("pad", int, 0);
        let deep = w.member("deep", int, 32);
        let inner = w.push("", kind::STRUCT, false, 2, 8, &[pad, deep].concat());
        let anon = w.member("", inner, 0);
        let union = w.push("", kind::UNION, false, 1, 8, &anon);
        let a = w.member("a", int, 0);
        let u = w.member("", union, 32);
        let c = w.member("c", const_int, 96);
        let bits = w.member("bits", int3, 128);
        w.push("outer", kind::STRUCT, false, 4, 20, &[a, u, c, bits].concat());
        let proto = w.push("", kind::FUNC_PROTO, false, 0, int, &[]);
        w.push("do_thing", kind::FUNC, false, 0, proto, &[]);
        w.push("btf_trace_thing_happened", kind::TYPEDEF, false, 0, proto, &[]);
        w.finish(layout)
    }

    #[test]
    fn finds_members_through_anonymous_unions_and_qualifiers() {
        for layout in [false, true] {
            let btf = KernelBtf::parse(sample(layout)).expect("parses");
            assert_eq!(btf.member_offset("outer", "a").unwrap(), 0);
            assert_eq!(btf.member_offset("outer", "deep").unwrap(), 8, "through the anonymous union and struct");
            assert_eq!(btf.member_offset("outer", "c").unwrap(), 12);
            let bitfield = btf.member_offset("outer", "bits").unwrap_err().to_string();
            assert!(bitfield.contains("bitfield"), "{bitfield}");
            assert!(btf.member_offset("outer", "missing").is_err());
            assert!(btf.member_offset("int_t", "a").is_err(), "a typedef is not a struct");
            assert!(btf.has_function("do_thing"));
            assert!(!btf.has_function("outer"));
            assert!(btf.has_tracepoint("thing_happened"));
            assert!(!btf.has_tracepoint("do_thing"));
        }
    }

    /// A module's BTF on top of vmlinux's: its struct's members of vmlinux's types, and of its own, found by
    /// name in either; a name of each shadows nothing of the other.
    #[test]
    fn reads_a_module_split_on_top_of_its_base() {
        let mut base = Writer::new();
        let int = base.push("int", kind::INT, false, 0, 4, &[32]);
        let a = base.member("a", int, 0);
        base.push("in_base", kind::STRUCT, false, 1, 4, &a);
        let mut module = Writer::split(&base);
        let x = [module.split_name(&base, "x"), int, 0];
        let inner = module.next_id;
        let name = module.split_name(&base, "zz_inner");
        for word in [name, (u32::from(kind::STRUCT) << 24) | 1, 4].iter().chain(&x) {
            module.types.extend_from_slice(&word.to_ne_bytes());
        }
        module.next_id += 1;
        let outer_name = module.split_name(&base, "module_struct");
        let pad = [module.split_name(&base, "pad"), int, 0];
        let deep = [module.split_name(&base, "deep"), inner, 64];
        for word in [outer_name, (u32::from(kind::STRUCT) << 24) | 2, 12].iter().chain(&pad).chain(&deep) {
            module.types.extend_from_slice(&word.to_ne_bytes());
        }
        let base_bytes = base.finish(false);
        let module_bytes = module.finish(false);
        let btf = KernelBtf::parse(base_bytes.clone()).unwrap().with_split(&module_bytes).expect("splits");
        assert_eq!(btf.member_offset("module_struct", "deep.x").unwrap(), 8);
        assert_eq!(btf.member_offset("in_base", "a").unwrap(), 0);
        assert!(btf.has_struct("zz_inner") && btf.has_struct("in_base"));
        assert!(!btf.has_struct("missing"));
        // Truncated or foreign module bytes are an error.
        for len in [0, 4, module_bytes.len() - 3] {
            let base = KernelBtf::parse(base_bytes.clone()).unwrap();
            assert!(base.with_split(&module_bytes[..len]).is_err(), "truncated at {len}");
        }
    }

    #[test]
    fn bad_btf_is_an_error_not_a_panic() {
        let good = sample(false);
        assert!(KernelBtf::parse(Vec::new()).is_err());
        assert!(KernelBtf::parse(vec![0; 24]).is_err(), "no magic");
        for len in [4, 12, 24, 40, good.len() - 3] {
            assert!(KernelBtf::parse(good[..len].to_vec()).is_err(), "truncated at {len}");
        }
        // A kind this reader does not know, without a layout section to size it.
        let mut unknown = good.clone();
        let info_at = 24 + 4;
        unknown[info_at..info_at + 4].copy_from_slice(&(20u32 << 24).to_ne_bytes());
        let error = KernelBtf::parse(unknown).map(|_| ()).unwrap_err().to_string();
        assert!(error.contains("kind 20"), "{error}");
    }
}
