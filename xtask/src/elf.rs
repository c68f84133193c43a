//! What xtask reads of an ELF file: whether it is static, for which machine, and which libraries it loads.

use std::{fs, path::Path};

use anyhow::{Context as _, Result};

/// The dynamic loader an ELF executable asks for (its `PT_INTERP`), `None` for a static one.
pub fn interpreter(binary: &Path) -> Result<Option<String>> {
    use object::read::elf::{ElfFile64, ProgramHeader as _};
    let data = fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let elf = ElfFile64::<object::Endianness>::parse(&*data).with_context(|| format!("{}", binary.display()))?;
    let endian = elf.endian();
    for header in elf.elf_program_headers() {
        if header.p_type(endian) == object::elf::PT_INTERP {
            let path = header.data(endian, &*data).map_err(|()| anyhow::anyhow!("a truncated PT_INTERP"))?;
            return Ok(Some(String::from_utf8_lossy(path).trim_end_matches('\0').to_owned()));
        }
    }
    Ok(None)
}

/// An ELF file's `e_machine`.
pub fn machine(binary: &Path) -> Result<u16> {
    use object::read::elf::{ElfFile64, FileHeader as _};
    let data = fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let elf = ElfFile64::<object::Endianness>::parse(&*data).with_context(|| format!("{}", binary.display()))?;
    Ok(elf.elf_header().e_machine(elf.endian()))
}

/// The libraries an ELF file names (`DT_NEEDED`); none for a static one.
pub fn needed(file: &Path) -> Result<Vec<String>> {
    use object::{Object as _, ObjectSection as _};
    let data = fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let elf = object::File::parse(&*data).with_context(|| format!("{} is no ELF file", file.display()))?;
    let (Some(dynamic), Some(strings)) = (elf.section_by_name(".dynamic"), elf.section_by_name(".dynstr")) else {
        return Ok(Vec::new());
    };
    let (entries, strings) = (dynamic.data()?, strings.data()?);
    let mut needed = Vec::new();
    for entry in entries.chunks_exact(16) {
        let tag = u64::from_le_bytes(entry[..8].try_into().expect("8 bytes"));
        let value = u64::from_le_bytes(entry[8..].try_into().expect("8 bytes"));
        match tag {
            0 => break,
            // DT_NEEDED: an offset into .dynstr.
            1 => {
                let name = strings.get(value as usize..).and_then(|s| s.split(|b| *b == 0).next());
                let name = name.with_context(|| format!("{}: a DT_NEEDED out of .dynstr", file.display()))?;
                needed.push(String::from_utf8_lossy(name).into_owned());
            }
            _ => {}
        }
    }
    Ok(needed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_executable_names_its_loader_and_libc() {
        // This test's own binary, built for this machine and linked against glibc.
        let own = std::env::current_exe().unwrap();
        assert!(interpreter(&own).unwrap().is_some_and(|i| i.contains("ld-linux")));
        assert!(needed(&own).unwrap().iter().any(|n| n.starts_with("libc.so")));
        let wanted = if cfg!(target_arch = "x86_64") { object::elf::EM_X86_64 } else { object::elf::EM_AARCH64 };
        assert_eq!(machine(&own).unwrap(), wanted);
    }
}
