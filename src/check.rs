//! Checking a configuration against the layers that use it.
//!
//! `config` parses and checks plain data; a `[[hooks]]` entry is valid only
//! if its scheme (`verify`) and its rules (`rules`) build from it. This is
//! the one place that asks them, so `check-config`, a reload and a start
//! refuse the same files with the same [`Invalid`] error.

use std::path::Path;

use crate::config::{Config, ConfigError, HookConfig, Invalid};
use crate::rules::HookRules;
use crate::verify::Scheme;

/// Build a hook's scheme and rules; an error's key is relative to the hook
/// (`scheme`, `allow_ips[0]`).
pub fn hook_parts(h: &HookConfig) -> Result<(Scheme, HookRules), Invalid> {
    let scheme = Scheme::from_config(h).map_err(|e| Invalid::new(e.key, e.message))?;
    let rules = HookRules::from_config(h).map_err(|e| Invalid::new(e.key, e.message))?;
    Ok((scheme, rules))
}

fn check_hook(h: &HookConfig) -> Result<(), Invalid> {
    hook_parts(h).map(|_| ())
}

impl Config {
    /// Read and validate a config file, every hook's scheme and rules included.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, &check_hook)
    }

    /// Parse and validate config text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        Config::parse_with(path, text, &check_hook)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_errors_name_the_hook_key() {
        let e = Config::parse(
            Path::new("/etc/webhookd/test.toml"),
            "[[hooks]]\nid = \"a\"\nscheme = \"nope\"\nsecrets = [\"env:X\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("/etc/webhookd/test.toml")
                && e.contains("hooks[0].scheme")
                && e.contains("unknown scheme"),
            "{e}"
        );
    }
}
