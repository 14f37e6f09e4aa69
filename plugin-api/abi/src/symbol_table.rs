//! What a library file's own dynamic symbol table says about one exported symbol (ELF only).
//!
//! The system's dynamic loader turns a symbol's name into an address and nothing more: how many
//! bytes lie there is not its concern. The loader must know that before it reads the version
//! symbol, since a shorter symbol of the same name may sit at the very end of a mapped page,
//! where reading a whole [`ApiVersionSymbol`](crate::ApiVersionSymbol) faults. An ELF file
//! records each symbol's size, and the segments the dynamic loader maps, so the loader reads
//! them from the file first. (Mach-O and PE symbol tables record no sizes; see
//! `read_version_symbol` in the loader for those platforms.)

use std::fs::File;
use std::path::Path;

use object::read::{NativeFile, ReadCache};
use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind, SymbolScope};

/// What a library file's dynamic symbol table says about a symbol name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Definition {
    /// The file exports no definition of that name (a same-named symbol the dynamic loader
    /// might find in another library is not this file's, and is not read).
    Missing,
    /// An exported data object of `size` bytes, all inside one segment the dynamic loader maps.
    Data {
        /// `st_size`.
        size: u64,
    },
    /// An exported definition that is not a data object (a function, a TLS variable, …).
    NotData,
    /// An exported data object of `size` bytes that do not all lie inside one mapped segment.
    OutsideSegments {
        /// `st_size`.
        size: u64,
    },
}

/// The definition of `name` that the library file at `path` exports, from its dynamic symbol
/// table (the table the dynamic loader looks names up in).
///
/// Design: the file is read through a small cache of the parts parsed (headers, program
/// headers, dynamic symbol and string tables), not whole: a plugin library built with debug
/// information is tens of megabytes.
///
/// # Errors
///
/// A message when the file cannot be read or is not an ELF file of this platform's class.
pub(crate) fn exported_definition(path: &Path, name: &str) -> Result<Definition, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let cache = ReadCache::new(file);
    let elf = NativeFile::parse(&cache).map_err(|e| format!("not an ELF file: {e}"))?;
    let Some(symbol) = elf.dynamic_symbols().find(|s| {
        s.name_bytes().is_ok_and(|n| n == name.as_bytes())
            && s.is_definition()
            && s.scope() == SymbolScope::Dynamic
    }) else {
        return Ok(Definition::Missing);
    };
    if symbol.kind() != SymbolKind::Data {
        return Ok(Definition::NotData);
    }
    let (start, size) = (symbol.address(), symbol.size());
    let Some(end) = start.checked_add(size) else {
        return Ok(Definition::OutsideSegments { size });
    };
    // `segments` are the loadable (`PT_LOAD`) ones; `size` is what is mapped (`p_memsz`).
    let mapped = elf.segments().any(|segment| {
        let from = segment.address();
        from <= start && segment.size().checked_add(from).is_some_and(|to| end <= to)
    });
    Ok(if mapped {
        Definition::Data { size }
    } else {
        Definition::OutsideSegments { size }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This crate's own test binary is an ELF file exporting nothing of that name.
    #[test]
    fn a_name_the_file_does_not_export_is_missing() {
        let exe = std::env::current_exe().unwrap();
        assert_eq!(
            exported_definition(&exe, "phobos_no_such_symbol_anywhere"),
            Ok(Definition::Missing)
        );
    }

    #[test]
    fn a_file_that_is_not_elf_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("libtext.so");
        std::fs::write(&path, "not an ELF file\n").unwrap();
        let err = exported_definition(&path, "x").unwrap_err();
        assert!(err.starts_with("not an ELF file"), "{err}");
        let err = exported_definition(&dir.path().join("absent.so"), "x").unwrap_err();
        assert!(!err.is_empty());
    }
}
