//! Reading the YAML file and the process environment into a `Config`.

use std::path::Path;

use pgshift_rules::config::{parse_config, Config, ConfigErrors};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is larger than {limit} bytes")]
    TooLarge { path: String, limit: u64 },
    #[error("{path}: {} error(s)\n{errors}", errors.len())]
    Invalid { path: String, errors: ConfigErrors },
}

/// A config file is small; anything this large is a mistake (or a hostile
/// symlink) and is refused before being read.
const MAX_CONFIG_BYTES: u64 = 16 * 1024 * 1024;

pub fn load(path: &Path) -> Result<Config, LoadError> {
    let shown = path.display().to_string();
    let read = |source| LoadError::Read {
        path: shown.clone(),
        source,
    };
    let len = std::fs::metadata(path).map_err(read)?.len();
    if len > MAX_CONFIG_BYTES {
        return Err(LoadError::TooLarge {
            path: shown,
            limit: MAX_CONFIG_BYTES,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    parse_config(&text, &|name| std::env::var(name).ok()).map_err(|errors| LoadError::Invalid {
        path: shown,
        errors,
    })
}
