//! Configuration reload (SIGHUP, `systemctl reload dosetrack`): which
//! differences between the running configuration and the files as they are
//! now may be applied to a running daemon, and which need a restart.
//!
//! Pure: the daemon reads the config file and its drug file, validates them
//! fully (the shell's config loader, the drug file loaded into a
//! [`crate::patient::Formulary`]), and hands their parsed TOML here with
//! the running files' TOML. [`classify`] lists every key that differs:
//!
//! * **applied**: `[state]`, `[limits]`, `[devices]`, `[drug]`, `[alerts]`, `[log] level`
//!   and anything in the drug file (targets, dose limits, interactions,
//!   models). The daemon recomputes everything derived from the stored
//!   inputs with them (the inputs themselves never change).
//! * **refused**: everything else (`[broker]`, `[topics]`, `[database]`,
//!   `[log] format`, and any section not listed above, so a section added
//!   later is refused until it is made reloadable on purpose): changing it
//!   would need new connections, a new database or a new log sink.
//!
//! Keys set on the command line (`--broker`, `--database`, ...) are left
//! out: the command line wins after a reload too. Secrets are never shown.
//! The shell builds the configuration the daemon runs with afterwards: the
//! running one with the reloadable sections taken from the new one.

use std::fmt;

/// Sections (or keys) a reload applies; everything else is refused.
pub const RELOADABLE: &[&str] = &["state", "limits", "devices", "drug", "alerts", "log.level"];

/// Shown instead of a secret's value.
const REDACTED: &str = "<redacted>";

/// Shown for a key not in the file (its built-in default applies).
const UNSET: &str = "(unset)";

/// One key that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `broker.port`; drug file keys are prefixed `drug file `.
    pub key: String,
    /// The running value (TOML), `(unset)` when not in the file.
    pub old: String,
    pub new: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.key, self.old, self.new)
    }
}

impl Change {
    /// The warning for a refused change: "broker.port changed from 1883 to
    /// 1884: restart dosetrack to apply; keeping 1883".
    pub fn refusal(&self) -> String {
        format!(
            "{} changed from {} to {}: restart dosetrack to apply; keeping {}",
            self.key, self.old, self.new, self.old
        )
    }
}

/// Every difference, applied or refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Classified {
    pub applied: Vec<Change>,
    pub refused: Vec<Change>,
}

impl Classified {
    /// The applied changes as one line: `a 1 -> 2; b x -> y`.
    pub fn applied_summary(&self) -> String {
        self.applied
            .iter()
            .map(Change::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// True when some drug file key changed (the model of every patient
    /// must be recomputed).
    pub fn drug_changed(&self) -> bool {
        self.applied
            .iter()
            .any(|c| c.key.starts_with(DRUG_PREFIX) || c.key == "drug.file")
    }
}

/// Prefix of drug file keys in [`Change::key`].
pub const DRUG_PREFIX: &str = "drug file ";

/// Whether `key` is one a reload applies.
pub fn is_reloadable(key: &str) -> bool {
    RELOADABLE.iter().any(|r| {
        key == *r
            || key
                .strip_prefix(r)
                .is_some_and(|rest| rest.starts_with('.'))
    })
}

fn is_secret(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    last.contains("password") || last.contains("secret") || last.ends_with("_key")
}

/// Classify every difference between the running config file and drug
/// file (`old_*`, parsed TOML) and the new ones. `overridden`: keys the
/// command line sets (the shell's `overridden_keys`), left out.
pub fn classify(
    old_config: &toml::Table,
    new_config: &toml::Table,
    overridden: &[&str],
    old_drug: &toml::Table,
    new_drug: &toml::Table,
) -> Classified {
    let mut out = Classified::default();
    let mut diffs = Vec::new();
    diff_tables("", old_config, new_config, &mut diffs);
    for (key, old, new) in diffs {
        if overridden.contains(&key.as_str()) {
            continue;
        }
        let change = if is_secret(&key) {
            Change {
                old: if old.is_some() { REDACTED } else { UNSET }.to_owned(),
                new: if new.is_some() { REDACTED } else { UNSET }.to_owned(),
                key,
            }
        } else {
            Change {
                old: old.unwrap_or_else(|| UNSET.to_owned()),
                new: new.unwrap_or_else(|| UNSET.to_owned()),
                key,
            }
        };
        if is_reloadable(&change.key) {
            out.applied.push(change);
        } else {
            out.refused.push(change);
        }
    }
    let mut diffs = Vec::new();
    diff_tables("", old_drug, new_drug, &mut diffs);
    for (key, old, new) in diffs {
        out.applied.push(Change {
            key: format!("{DRUG_PREFIX}{key}"),
            old: old.unwrap_or_else(|| UNSET.to_owned()),
            new: new.unwrap_or_else(|| UNSET.to_owned()),
        });
    }
    out
}

/// Every leaf key that differs between two tables: (dotted key, old, new),
/// values as TOML text, `None` where absent. Tables are walked into; any
/// other value (arrays too) is compared whole.
fn diff_tables(
    prefix: &str,
    old: &toml::Table,
    new: &toml::Table,
    out: &mut Vec<(String, Option<String>, Option<String>)>,
) {
    let empty = toml::Table::new();
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match (old.get(k), new.get(k)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) => {
                diff_tables(&key, a, b, out)
            }
            (Some(toml::Value::Table(a)), None) => diff_tables(&key, a, &empty, out),
            (None, Some(toml::Value::Table(b))) => diff_tables(&key, &empty, b, out),
            (a, b) => out.push((key, a.map(show), b.map(show))),
        }
    }
}

fn show(v: &toml::Value) -> String {
    match v {
        // Integers and floats as written (`500.0`, not `500`).
        toml::Value::Float(f) if f.fract() == 0.0 && f.is_finite() => format!("{f:.1}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn t(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn reloadable_sections_are_applied_the_rest_refused_with_a_clear_line() {
        let old = t("[broker]\nport = 1883\npassword = \"a\"\n[alerts]\nhigh_lead_min = 30.0\n[log]\nlevel = \"info\"\nformat = \"text\"\n");
        let new = t("[broker]\nport = 1884\npassword = \"b\"\n[alerts]\nhigh_lead_min = 10.0\n[alerts.rules.concentration_high]\ncondition_delay_s = 0\n[log]\nlevel = \"debug\"\nformat = \"json\"\n[http]\nport = 9000\n");
        let c = classify(&old, &new, &[], &toml::Table::new(), &toml::Table::new());
        let applied: Vec<String> = c.applied.iter().map(Change::to_string).collect();
        assert_eq!(
            applied,
            [
                "alerts.high_lead_min 30.0 -> 10.0",
                "alerts.rules.concentration_high.condition_delay_s (unset) -> 0",
                "log.level \"info\" -> \"debug\"",
            ]
        );
        let refused: Vec<String> = c.refused.iter().map(Change::refusal).collect();
        assert_eq!(
            refused,
            [
                "broker.password changed from <redacted> to <redacted>: restart dosetrack to apply; keeping <redacted>",
                "broker.port changed from 1883 to 1884: restart dosetrack to apply; keeping 1883",
                "http.port changed from (unset) to 9000: restart dosetrack to apply; keeping (unset)",
                "log.format changed from \"text\" to \"json\": restart dosetrack to apply; keeping \"text\"",
            ]
        );
        assert!(!format!("{c:?}").contains("\"b\""), "secret shown: {c:?}");
        assert!(!c.drug_changed());
    }

    #[test]
    fn drug_file_changes_are_applied_with_their_keys() {
        let old = t("[targets.ceiling_ng_per_ml]\nvalue = 500.0\nsource = \"s\"\n");
        let new = t("[targets.ceiling_ng_per_ml]\nvalue = 200.0\nsource = \"s\"\n");
        let c = classify(&t(""), &t(""), &[], &old, &new);
        assert!(c.refused.is_empty());
        assert_eq!(
            c.applied_summary(),
            "drug file targets.ceiling_ng_per_ml.value 500.0 -> 200.0"
        );
        assert!(c.drug_changed());
        // Nothing changed: nothing to do.
        assert_eq!(classify(&new, &new, &[], &new, &new), Classified::default());
    }

    #[test]
    fn reloadable_keys_match_whole_sections_only() {
        assert!(is_reloadable("alerts.rules.redose_due.clear_delay_s"));
        assert!(is_reloadable("log.level"));
        assert!(!is_reloadable("log.format"));
        assert!(!is_reloadable("statefulness"));
        assert!(!is_reloadable("database.path"));
    }
}
