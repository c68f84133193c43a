//! The running kernel's layout, read from its BTF (`/sys/kernel/btf/vmlinux`).
//!
//! Rust eBPF programs get no CO-RE relocations, so every structure member the programs read is located
//! here at start-up and handed to them as [`KernelOffsets`]. A member that moved between kernels is
//! found wherever it is; one that is missing is an error that names it.

use std::path::Path;

use anyhow::{Context as _, Result, anyhow, bail};
use btf_rs::{Btf, Type};
use udptrace_common::KernelOffsets;

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

pub struct KernelBtf {
    btf: Btf,
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
        let btf = Btf::from_file(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Self { btf })
    }

    /// The byte offset of `path` (`a.b.c`, anonymous structs and unions searched through) in `struct
    /// outer`.
    pub fn member_offset(&self, outer: &str, path: &str) -> Result<u32> {
        let mut ty = self.named_struct(outer)?;
        let mut offset_bits = 0u32;
        for name in path.split('.') {
            let (bits, member_ty) = self
                .find_member(&ty, name)?
                .ok_or_else(|| anyhow!("struct {outer} has no member {path} in this kernel's BTF"))?;
            offset_bits += bits;
            ty = member_ty;
        }
        if !offset_bits.is_multiple_of(8) {
            bail!("{outer}.{path} is a bitfield in this kernel's BTF");
        }
        Ok(offset_bits / 8)
    }

    /// Whether the kernel has the tracepoint `name` (every tracepoint has a `btf_trace_<name>` typedef).
    pub fn has_tracepoint(&self, name: &str) -> bool {
        self.btf.resolve_ids_by_name(&format!("btf_trace_{name}")).is_ok_and(|ids| !ids.is_empty())
    }

    /// Whether `name` is a function in the kernel's BTF (what fentry needs to attach).
    pub fn has_function(&self, name: &str) -> bool {
        self.btf.resolve_types_by_name(name).is_ok_and(|types| types.iter().any(|t| matches!(t, Type::Func(_))))
    }

    /// The offsets of every member udptrace's programs read.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets> {
        let sock = |path: &str| self.member_offset("sock", path);
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
            socket_to_inode: self.member_offset("socket_alloc", "vfs_inode")?
                - self.member_offset("socket_alloc", "socket")?,
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
        })
    }

    fn named_struct(&self, name: &str) -> Result<Type> {
        let types = self.btf.resolve_types_by_name(name).unwrap_or_default();
        types
            .into_iter()
            .find(|t| matches!(t, Type::Struct(s) if s.size() > 0))
            .ok_or_else(|| anyhow!("struct {name} is not in this kernel's BTF"))
    }

    /// Looks `name` up among the members of `ty` (a struct or union, through typedefs and qualifiers),
    /// descending into anonymous members. Returns the member's bit offset and its type.
    fn find_member(&self, ty: &Type, name: &str) -> Result<Option<(u32, Type)>> {
        let ty = self.strip(ty.clone())?;
        let members = match &ty {
            Type::Struct(s) | Type::Union(s) => &s.members,
            _ => return Ok(None),
        };
        for member in members {
            let member_name = self.btf.resolve_name(member).unwrap_or_default();
            let member_ty = self.btf.resolve_chained_type(member)?;
            if member_name == name {
                return Ok(Some((member.bit_offset(), member_ty)));
            }
            if member_name.is_empty()
                && let Some((bits, found)) = self.find_member(&member_ty, name)?
            {
                return Ok(Some((member.bit_offset() + bits, found)));
            }
        }
        Ok(None)
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn strip(&self, mut ty: Type) -> Result<Type> {
        loop {
            match &ty {
                Type::Typedef(t) => ty = self.btf.resolve_chained_type(t)?,
                Type::Const(t) | Type::Volatile(t) | Type::Restrict(t) => ty = self.btf.resolve_chained_type(t)?,
                Type::TypeTag(t) => ty = self.btf.resolve_chained_type(t)?,
                _ => return Ok(ty),
            }
        }
    }
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
        assert!(btf.has_tracepoint("inet_sk_error_report"));
        assert!(!btf.has_tracepoint("no_such_tracepoint_here"));
        assert!(btf.has_function("__udp4_lib_err"));
        assert!(btf.member_offset("sock", "no_such_member").is_err());
    }
}
