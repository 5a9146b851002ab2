//! Checking a configuration against the layers that use it.
//!
//! `config` parses and checks plain data; a `[[hooks]]` entry is valid only
//! if its scheme (`verify`) and its rules (`rules`) build from it. This is
//! the one place that asks them, so `check-config`, a reload and a start
//! refuse the same files with the same [`Invalid`] error.

use std::path::Path;

use crate::config::{Config, ConfigError, HookConfig, Invalid};
use crate::payload::{Rule, RuleError, ValueRef};
use crate::rules::HookRules;
use crate::verify::Scheme;

/// A hook's payload rule and handshake, compiled.
#[derive(Debug, Clone, Default)]
pub struct PayloadParts {
    pub rule: Option<Rule>,
    pub handshake: Option<Handshake>,
}

/// `[hooks.handshake]`, compiled.
#[derive(Debug, Clone)]
pub struct Handshake {
    pub rule: Rule,
    pub echo: ValueRef,
    pub json_field: Option<String>,
}

fn rule_error(e: RuleError) -> Invalid {
    Invalid::new(e.key, e.message)
}

/// Compile a hook's `rule`, `handshake` and exec `args`/`env`/`files`; an
/// error's key is relative to the hook (`rule.all[1].regex`).
pub fn payload_parts(h: &HookConfig) -> Result<PayloadParts, Invalid> {
    let rule = match &h.rule {
        Some(r) => Some(Rule::compile(r, "rule").map_err(rule_error)?),
        None => None,
    };
    let handshake = match &h.handshake {
        Some(hs) => Some(Handshake {
            rule: Rule::compile(&hs.rule, "handshake.rule").map_err(rule_error)?,
            echo: ValueRef::parse(&hs.echo).map_err(|m| Invalid::new("handshake.echo", m))?,
            json_field: hs.json_field.clone(),
        }),
        None => None,
    };
    for spec in h.action_specs() {
        crate::deliver::exec_values(spec.action, &spec.key()).map_err(rule_error)?;
        crate::deliver::Condition::compile(&spec, h.payload_content_type.as_deref())?;
    }
    Ok(PayloadParts { rule, handshake })
}

/// Build a hook's scheme and rules; an error's key is relative to the hook
/// (`scheme`, `allow_ips[0]`).
pub fn hook_parts(h: &HookConfig) -> Result<(Scheme, HookRules), Invalid> {
    let scheme = Scheme::from_config(h).map_err(|e| Invalid::new(e.key, e.message))?;
    let rules = HookRules::from_config(h).map_err(|e| Invalid::new(e.key, e.message))?;
    Ok((scheme, rules))
}

fn check_hook(h: &HookConfig) -> Result<(), Invalid> {
    hook_parts(h)?;
    payload_parts(h).map(|_| ())
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
