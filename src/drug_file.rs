//! Reading a drug file from disk: the shell's half of loading one (the
//! core's [`DrugFile::from_toml_str`] parses and validates the text; the
//! core reads no files).

use crate::drug::{DrugFile, DrugFileError};
use std::path::Path;

/// Read and validate the drug file at `path`. Errors name the file: an
/// unreadable one is [`DrugFileError::Io`], the others as
/// [`DrugFile::from_toml_str`] reports them.
pub fn load(path: &Path) -> Result<DrugFile, DrugFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| DrugFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    DrugFile::from_toml_str(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> DrugFile {
        match DrugFile::builtin() {
            Ok(d) => d,
            Err(e) => panic!("shipped drug file must load: {e}"),
        }
    }

    #[test]
    fn shipped_file_loads_from_disk_and_matches_builtin() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/drugs/ketamine.toml");
        let from_disk = match load(&path) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(from_disk, shipped());
        assert_eq!(from_disk.schema_version(), 1);
        assert_eq!(from_disk.drug().name, "ketamine");
        assert_eq!(from_disk.drug().substance, "racemic ketamine base");
        assert_eq!(from_disk.drug().molar_mass_g_per_mol.value, 237.725);
    }

    #[test]
    fn io_errors() {
        let missing = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/drugs/no-such-drug.toml");
        match load(&missing) {
            Err(DrugFileError::Io { path, .. }) => assert_eq!(path, missing),
            other => panic!("expected Io, got {other:?}"),
        }
    }
}
