//! Structural validation of a host kernel binary's ELF image before it is given to `dlopen`, and
//! the list of functions it defines itself.
//!
//! Checked: the identification (magic, 64-bit, little-endian, version 1), a shared object
//! (`ET_DYN`) for this machine, the program and section header tables inside the image, every
//! loadable segment's and every section's file range inside the image (a truncated binary would
//! otherwise be mapped past its end and fault with SIGBUS on first touch inside the loader), and a
//! dynamic symbol table (`.dynsym` with its string table) whose entries are read to list the
//! defined functions. What is *not* checked: relocations, dynamic-section contents and the code —
//! a structurally sound binary is trusted, like device code on the NPU.
use std::collections::BTreeSet;

const EHDR_LEN: usize = 64;
const PHDR_LEN: usize = 56;
const SHDR_LEN: usize = 64;
const SYM_LEN: usize = 24;

const ET_DYN: u16 = 3;
#[cfg(target_arch = "x86_64")]
const HOST_MACHINE: Option<u16> = Some(62); // EM_X86_64
#[cfg(target_arch = "aarch64")]
const HOST_MACHINE: Option<u16> = Some(183); // EM_AARCH64
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const HOST_MACHINE: Option<u16> = None;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const SHT_NOBITS: u32 = 8;
const SHT_DYNSYM: u32 = 11;
const SHN_UNDEF: u16 = 0;
const STT_FUNC: u8 = 2;
const STB_GLOBAL: u8 = 1;
const STB_WEAK: u8 = 2;
const STV_HIDDEN: u8 = 2;
const STV_INTERNAL: u8 = 1;

/// What validation learned about an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ElfInfo {
    /// Functions the object defines and exports (global or weak, default or protected visibility).
    pub functions: BTreeSet<String>,
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// `[off, off + len)` as usize, when it lies inside an image of `total` bytes.
fn range(off: u64, len: u64, total: usize) -> Option<(usize, usize)> {
    let end = off.checked_add(len)?;
    (end <= total as u64).then_some((off as usize, end as usize))
}

/// Validates `image` (the whole file) and lists its defined functions; `Err` says what is wrong.
pub(crate) fn validate(image: &[u8]) -> Result<ElfInfo, String> {
    let n = image.len();
    if n < EHDR_LEN {
        return Err(format!(
            "{n} bytes are shorter than an ELF header ({EHDR_LEN} bytes)"
        ));
    }
    if &image[..4] != b"\x7fELF" {
        return Err("no ELF magic number: not an ELF shared object".into());
    }
    if image[4] != 2 {
        return Err(format!(
            "ELF class {} is not ELFCLASS64 (2): not a 64-bit object",
            image[4]
        ));
    }
    if image[5] != 1 {
        return Err(format!(
            "ELF data encoding {} is not little-endian (1)",
            image[5]
        ));
    }
    let field = |v: Option<u64>| v.ok_or_else(|| "truncated ELF header".to_string());
    let e_type = field(u16_at(image, 16).map(u64::from))? as u16;
    let machine = field(u16_at(image, 18).map(u64::from))? as u16;
    let version = field(u32_at(image, 20).map(u64::from))?;
    if image[6] != 1 || version != 1 {
        return Err(format!("ELF version {version} is not 1"));
    }
    if e_type != ET_DYN {
        return Err(format!(
            "ELF type {e_type} is not a shared object (ET_DYN = {ET_DYN})"
        ));
    }
    if let Some(host) = HOST_MACHINE {
        if machine != host {
            return Err(format!("ELF machine {machine} is not this host's ({host})"));
        }
    }
    let phoff = field(u64_at(image, 32))?;
    let shoff = field(u64_at(image, 40))?;
    let ehsize = field(u16_at(image, 52).map(u64::from))?;
    let phentsize = field(u16_at(image, 54).map(u64::from))?;
    let phnum = field(u16_at(image, 56).map(u64::from))?;
    let shentsize = field(u16_at(image, 58).map(u64::from))?;
    let shnum = field(u16_at(image, 60).map(u64::from))?;
    let shstrndx = field(u16_at(image, 62).map(u64::from))?;
    if ehsize < EHDR_LEN as u64 {
        return Err(format!("ELF header size {ehsize} is below {EHDR_LEN}"));
    }

    // Program headers: every loadable segment's file bytes must be in the image.
    if phnum == 0 || phentsize < PHDR_LEN as u64 {
        return Err(format!(
            "{phnum} program headers of {phentsize} bytes: a shared object needs program headers of at least {PHDR_LEN} bytes"
        ));
    }
    let (ph_start, _) = range(phoff, phnum * phentsize, n).ok_or_else(|| {
        format!("the program header table ({phnum} x {phentsize} bytes at offset {phoff}) runs past the end of the {n}-byte image")
    })?;
    let mut has_load = false;
    let mut has_dynamic = false;
    for i in 0..phnum as usize {
        let h = ph_start + i * phentsize as usize;
        let (p_type, p_offset, p_filesz, p_memsz) = (
            u32_at(image, h).unwrap_or(0),
            u64_at(image, h + 8).unwrap_or(0),
            u64_at(image, h + 32).unwrap_or(0),
            u64_at(image, h + 40).unwrap_or(0),
        );
        if p_type == PT_LOAD || p_type == PT_DYNAMIC {
            range(p_offset, p_filesz, n).ok_or_else(|| {
                format!("segment {i} ({p_filesz} bytes at offset {p_offset}) runs past the end of the {n}-byte image: truncated binary")
            })?;
        }
        if p_type == PT_LOAD {
            has_load = true;
            if p_filesz > p_memsz {
                return Err(format!(
                    "segment {i} has {p_filesz} file bytes but only {p_memsz} memory bytes"
                ));
            }
        }
        has_dynamic |= p_type == PT_DYNAMIC;
    }
    if !has_load || !has_dynamic {
        return Err("no loadable or no dynamic segment: not a shared object".into());
    }

    // Section headers: needed to find the dynamic symbol table.
    if shnum == 0 || shentsize < SHDR_LEN as u64 {
        return Err(format!(
            "{shnum} section headers of {shentsize} bytes: the binary needs a section header table (with .dynsym)"
        ));
    }
    if shstrndx >= shnum {
        return Err(format!(
            "section name table index {shstrndx} is not below the section count {shnum}"
        ));
    }
    let (sh_start, _) = range(shoff, shnum * shentsize, n).ok_or_else(|| {
        format!("the section header table ({shnum} x {shentsize} bytes at offset {shoff}) runs past the end of the {n}-byte image: truncated binary")
    })?;
    let section = |i: usize| {
        let h = sh_start + i * shentsize as usize;
        (
            u32_at(image, h + 4).unwrap_or(0),  // sh_type
            u64_at(image, h + 24).unwrap_or(0), // sh_offset
            u64_at(image, h + 32).unwrap_or(0), // sh_size
            u32_at(image, h + 40).unwrap_or(0), // sh_link
        )
    };
    let mut dynsym = None;
    for i in 0..shnum as usize {
        let (ty, off, size, link) = section(i);
        if ty != SHT_NOBITS && ty != 0 {
            range(off, size, n).ok_or_else(|| {
                format!("section {i} ({size} bytes at offset {off}) runs past the end of the {n}-byte image: truncated binary")
            })?;
        }
        if ty == SHT_DYNSYM {
            dynsym = Some((off, size, link));
        }
    }
    let (sym_off, sym_size, link) =
        dynsym.ok_or("no dynamic symbol table (.dynsym): it exports nothing")?;
    if link as u64 >= shnum {
        return Err(format!(
            ".dynsym links string table section {link}, not below {shnum}"
        ));
    }
    let (_, str_off, str_size, _) = section(link as usize);
    let (str_start, str_end) = range(str_off, str_size, n)
        .ok_or("the dynamic string table runs past the end of the image")?;
    let strtab = &image[str_start..str_end];
    let (sym_start, _) = range(sym_off, sym_size, n).ok_or(".dynsym runs past the end")?;
    let mut functions = BTreeSet::new();
    for k in 0..sym_size as usize / SYM_LEN {
        let s = sym_start + k * SYM_LEN;
        let name_off = u32_at(image, s).unwrap_or(0) as usize;
        let info = image[s + 4];
        let other = image[s + 5];
        let shndx = u16_at(image, s + 6).unwrap_or(SHN_UNDEF);
        let (bind, ty, vis) = (info >> 4, info & 0xf, other & 0x3);
        if shndx == SHN_UNDEF
            || ty != STT_FUNC
            || !(bind == STB_GLOBAL || bind == STB_WEAK)
            || vis == STV_HIDDEN
            || vis == STV_INTERNAL
        {
            continue;
        }
        let name = strtab
            .get(name_off..)
            .and_then(|rest| rest.split(|&b| b == 0).next().filter(|_| rest.contains(&0)))
            .ok_or_else(|| format!("dynamic symbol {k} has a name outside the string table"))?;
        if let Ok(name) = std::str::from_utf8(name) {
            if !name.is_empty() {
                functions.insert(name.to_string());
            }
        }
    }
    Ok(ElfInfo { functions })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_kernels() -> Vec<u8> {
        std::fs::read(crate::TEST_KERNELS_PATH).unwrap()
    }

    #[test]
    fn the_test_binary_is_valid_and_lists_only_its_own_functions() {
        let info = validate(&test_kernels()).unwrap();
        for k in [
            "vec_add",
            "write_block_idx",
            "sync_all_sum",
            "dsnpu_sim_kernel_abi_version",
        ] {
            assert!(info.functions.contains(k), "{k} in {:?}", info.functions);
        }
        for imported in ["abort", "snprintf", "memcpy", "clock_gettime"] {
            assert!(
                !info.functions.contains(imported),
                "{imported} is a dependency's symbol"
            );
        }
    }

    #[test]
    fn every_truncation_is_rejected() {
        let image = test_kernels();
        // Prefixes sampled over the whole length: the section header table sits at the end, so
        // each truncation cuts a segment, a section or a header table.
        let mut step = 1;
        let mut len = 0;
        while len < image.len() {
            assert!(
                validate(&image[..len]).is_err(),
                "a {len}-byte prefix of {} was accepted",
                image.len()
            );
            len += step;
            step = (step * 2).min(997);
        }
        let e = validate(&image[..image.len() / 2]).unwrap_err();
        assert!(e.contains("past the end"), "{e}");
    }

    #[test]
    fn wrong_kinds_of_file_are_named() {
        let image = test_kernels();
        assert!(validate(b"hello").unwrap_err().contains("shorter than"));
        assert!(validate(&[0u8; 100]).unwrap_err().contains("magic"));
        let mut bad = image.clone();
        bad[4] = 1;
        assert!(validate(&bad).unwrap_err().contains("ELFCLASS64"));
        let mut exe = image.clone();
        exe[16] = 2; // ET_EXEC
        assert!(validate(&exe).unwrap_err().contains("not a shared object"));
        let mut phoff = image.clone();
        phoff[32..40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(validate(&phoff)
            .unwrap_err()
            .contains("program header table"));
        let mut shoff = image;
        shoff[40..48].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(validate(&shoff)
            .unwrap_err()
            .contains("section header table"));
    }
}
