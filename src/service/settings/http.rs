//! The `[http]` section: the listener's address, the ward's time zone, and
//! acknowledging from the ward page (`[http.acknowledge]`: who the operator
//! is, the tokens file's contents).

use super::ConfigError;
use serde::Deserialize;
use std::path::PathBuf;

/// The health and metrics listener (`/healthz`, `/metrics`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// `IP:PORT` to listen on; `None` (the built-in default): no listener.
    /// Loopback is expected; another address is allowed (a scraper on the
    /// hospital network) and logged as a warning at start.
    pub listen: Option<String>,
    /// `/healthz` answers 503 when an input has waited this long without
    /// being acknowledged (s).
    pub max_unacked_age_s: u64,
    /// The ward's time zone, an IANA name (`Europe/Paris`): the pages show
    /// times in it. The browser converts (its `Intl` API carries the tz
    /// database), so the daemon checks only the name's form.
    pub time_zone: String,
    /// Acknowledging alerts from the ward page (`[http.acknowledge]`).
    pub acknowledge: AcknowledgeSection,
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            listen: None,
            max_unacked_age_s: 60,
            time_zone: "UTC".to_owned(),
            acknowledge: AcknowledgeSection::default(),
        }
    }
}

/// Acknowledging alerts from the ward page (`POST
/// /api/v1/alerts/{id}/acknowledge`): off unless `enabled`; when on, every
/// request names its operator by the way `identity` says, and that name is
/// the command's `by`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AcknowledgeSection {
    pub enabled: bool,
    pub identity: OperatorIdentity,
    /// With `identity = "proxy_header"`: the request header in which the
    /// authenticating reverse proxy puts the user's name.
    pub header: String,
    /// With `identity = "token"`: a file of `OPERATOR TOKEN` lines (`#`
    /// comments), read at start.
    pub tokens_file: Option<PathBuf>,
    /// The tokens read from `tokens_file` (not a configuration key).
    #[serde(skip)]
    pub tokens: OperatorTokens,
}

impl Default for AcknowledgeSection {
    fn default() -> Self {
        AcknowledgeSection {
            enabled: false,
            identity: OperatorIdentity::ProxyHeader,
            header: "X-Remote-User".to_owned(),
            tokens_file: None,
            tokens: OperatorTokens::default(),
        }
    }
}

/// How a request to acknowledge names its operator.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OperatorIdentity {
    /// The authenticated user a reverse proxy puts in a header (the proxy
    /// authenticates; the daemon listens on loopback so nobody else can
    /// set the header).
    ProxyHeader,
    /// `Authorization: Bearer TOKEN`, each token an operator's.
    Token,
}

impl OperatorIdentity {
    /// As in the configuration file.
    pub fn as_str(self) -> &'static str {
        match self {
            OperatorIdentity::ProxyHeader => "proxy_header",
            OperatorIdentity::Token => "token",
        }
    }
}

/// Shortest operator token accepted (characters).
pub const MIN_TOKEN_CHARS: usize = 20;

/// Operator tokens: (operator, token) pairs. `Debug` shows the operators,
/// never the tokens.
#[derive(Clone, Default, PartialEq)]
pub struct OperatorTokens(Vec<(String, String)>);

impl std::fmt::Debug for OperatorTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.0
                    .iter()
                    .map(|(operator, _)| format!("{operator}: <redacted>")),
            )
            .finish()
    }
}

impl OperatorTokens {
    /// Parse a tokens file's text: `OPERATOR TOKEN` per line, `#` comments
    /// and blank lines ignored. Every operator a valid `by`, every token at
    /// least [`MIN_TOKEN_CHARS`] long and used once.
    pub fn parse(text: &str) -> Result<OperatorTokens, String> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(operator), Some(token), None) = (words.next(), words.next(), words.next())
            else {
                return Err(format!("line {}: expected OPERATOR TOKEN", n + 1));
            };
            if !valid_operator(operator) {
                return Err(format!(
                    "line {}: operator '{operator}' must be 1 to 64 letters, digits or . _ - @",
                    n + 1
                ));
            }
            if token.chars().count() < MIN_TOKEN_CHARS {
                return Err(format!(
                    "line {}: the token of {operator} is shorter than {MIN_TOKEN_CHARS} characters",
                    n + 1
                ));
            }
            if pairs.iter().any(|(_, t)| t == token) {
                return Err(format!("line {}: a token is used twice", n + 1));
            }
            pairs.push((operator.to_owned(), token.to_owned()));
        }
        Ok(OperatorTokens(pairs))
    }

    /// The operator whose token `token` is, compared in constant time.
    pub fn operator_of(&self, token: &str) -> Option<&str> {
        use subtle::ConstantTimeEq;
        let mut found = None;
        for (operator, t) in &self.0 {
            if bool::from(t.as_bytes().ct_eq(token.as_bytes())) {
                found = Some(operator.as_str());
            }
        }
        found
    }

    /// How many tokens.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No token.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An operator name as the daemon accepts it from a proxy header or a
/// tokens file: 1 to 64 ASCII letters, digits or `. _ - @`.
pub fn valid_operator(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

/// Is `name` shaped like an IANA time zone name (`UTC`, `Europe/Paris`,
/// `America/Argentina/Buenos_Aires`, `Etc/GMT+2`)?
pub(crate) fn is_time_zone_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.split('/').all(|part| {
            !part.is_empty()
                && part.starts_with(|c: char| c.is_ascii_alphabetic())
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+'))
        })
}

impl HttpSection {
    /// The address to listen on, if the listener is on.
    pub fn listen_addr(&self) -> Result<Option<std::net::SocketAddr>, ConfigError> {
        self.listen
            .as_deref()
            .map(|a| {
                a.parse().map_err(|_| ConfigError::Invalid {
                    key: "http.listen",
                    message: format!("'{a}' is not IP:PORT (e.g. 127.0.0.1:9187)"),
                })
            })
            .transpose()
    }
}
