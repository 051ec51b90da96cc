//! The sources file: which sources ingest knows, how each one's webhooks are verified, and
//! whether unknown sources are accepted.
//!
//! ```toml
//! unknown_sources = "reject"          # or "accept": unknown sources are taken unverified
//! unknown_quota = { per_second = 10, burst = 50 }  # optional, with "accept": all unknown together
//! [sources.github]
//! scheme = "github"                   # standard_webhooks, github, stripe, shopify, hmac, none
//! secret_env = ["GITHUB_WEBHOOK_SECRET", "GITHUB_WEBHOOK_SECRET_PREVIOUS"]
//! require_json = true                 # default false
//! [sources.acme]
//! scheme = "hmac"
//! header = "x-acme-signature"
//! encoding = "hex"                    # or "base64"
//! prefix = "sha256="                  # optional
//! id_header = "x-acme-delivery"       # optional (hmac and none)
//! event_id = "body_sha256"            # or "provider" (default), "body_sha256_always"
//! drop_headers = ["x-acme-token"]     # extra headers kept out of the envelope
//! quota = { per_second = 50, burst = 200 }  # optional: beyond it 429 (see `quota.rs`)
//! ```
//!
//! Secrets are never in the file: `secret_env` names environment variables (ECS injects them
//! from Secrets Manager), several for rotation; each must be set, non-empty and free of
//! surrounding whitespace. `tolerance_seconds` (1 to 86400, default 300) applies to the
//! timestamped schemes. `require_json` asks the caller to answer 415 when the content type is
//! not JSON and 400 when the body does not parse. Every mistake stops the start with an error
//! naming the file, the source and the key or variable at fault, never a secret's value.
//!
//! `event_id` ([`EventIds`]) says where a webhook's id comes from when the provider sends
//! none: a new UUIDv7 (`provider`, the default), or the hash of the source and body
//! (`body_sha256`), so that a provider's retry of a send that timed out but reached SQS gets
//! the same id and is stored once. A valid provider id always wins, except with
//! `body_sha256_always`, which ignores it (for body-only HMAC schemes, whose id headers are
//! not signed). Body-derived ids merge events whose bodies are identical: use them only for
//! sources whose every event body is unique (it carries an id or a timestamp).
//!
//! `drop_headers` names headers, beyond the built-in credential list of
//! [`crate::edge::headers`], that never reach the envelope (a source's own token header, say).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use crate::verify::{DEFAULT_TOLERANCE, Encoding, KeyError, Scheme, SchemeSettings, Verifier};

/// Most seconds a signed timestamp may be off.
const MAX_TOLERANCE_SECONDS: u64 = 86_400;

/// The sources ingest knows.
#[derive(Debug)]
pub(crate) struct Sources {
    known: BTreeMap<String, Source>,
    /// What unknown sources get, when they are accepted.
    fallback: Option<Source>,
}

/// One source's settings.
#[derive(Debug)]
pub(crate) struct Source {
    /// Checks the source's signatures and finds its event ids.
    pub verifier: Verifier,
    /// The body must be JSON (415 for another content type, 400 when it does not parse).
    pub require_json: bool,
    /// Where event ids come from; see [`Source::event_id`].
    pub event_ids: EventIds,
    /// Headers dropped from the envelope on top of the built-in credential headers.
    pub drop_headers: Vec<HeaderName>,
    /// Requests beyond it are answered 429 before their body is read.
    pub quota: Option<Quota>,
}

/// Where a source's event ids come from (`event_id` in the sources file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub(crate) enum EventIds {
    /// The provider's id when it sent a valid one, else a new UUIDv7: a retry without an id
    /// is stored again.
    #[default]
    #[serde(rename = "provider")]
    Provider,
    /// The provider's id when it sent a valid one, else derived from the source and body
    /// ([`body_event_id`]): a retry of the same body gets the same id.
    #[serde(rename = "body_sha256")]
    BodySha256,
    /// Always derived from the source and body, the provider's id ignored: a replay under a
    /// new (unsigned) delivery id still gets the same id.
    #[serde(rename = "body_sha256_always")]
    BodySha256Always,
}

mod quota;
mod streamed;

pub(crate) use quota::Quota;
use quota::RawQuota;
pub(crate) use streamed::{BodyIdHasher, StreamedId};

/// Prefix of body-derived event ids, so they cannot be mistaken for a provider's.
pub(crate) const BODY_ID_PREFIX: &str = "sha256:";

/// The event id derived from a body: `sha256:` and the lower-case hex SHA-256 of the source
/// name, a zero byte and the body (71 bytes of visible ASCII). The zero byte cannot occur in
/// a source name, so no two (source, body) pairs share the hashed bytes.
pub(crate) fn body_event_id(source: &str, body: &[u8]) -> String {
    let mut hash = BodyIdHasher::new(source);
    hash.update(body);
    hash.finish()
}

impl Sources {
    /// No sources file: every valid source name is accepted, unverified.
    pub(crate) fn open() -> Self {
        Self {
            known: BTreeMap::new(),
            fallback: Some(Source::unverified()),
        }
    }

    /// The configured source `source`.
    pub(crate) fn get(&self, source: &str) -> Option<&Source> {
        self.known.get(source)
    }

    /// The settings for a request to `source`: its own when configured, the unverified
    /// fallback when unknown sources are accepted, else `None` (answer 404).
    pub(crate) fn resolve(&self, source: &str) -> Option<&Source> {
        self.get(source).or(self.fallback.as_ref())
    }
}

impl Source {
    /// A source that verifies nothing and needs no particular body.
    fn unverified() -> Self {
        Self {
            verifier: Verifier::unverified(),
            require_json: false,
            event_ids: EventIds::Provider,
            drop_headers: Vec::new(),
            quota: None,
        }
    }

    /// The event id of a webhook to `source` whose verifier found the provider id `provided`
    /// (already checked to be 1 to 255 bytes of visible ASCII) and whose body is `body`.
    pub(crate) fn event_id(&self, source: &str, provided: Option<String>, body: &[u8]) -> String {
        match (self.event_ids, provided) {
            (EventIds::BodySha256Always, _) | (EventIds::BodySha256, None) => {
                body_event_id(source, body)
            }
            (EventIds::Provider | EventIds::BodySha256, Some(id)) => id,
            (EventIds::Provider, None) => uuid::Uuid::now_v7().to_string(),
        }
    }
}

/// Why the sources file cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SourcesError {
    /// The file cannot be read.
    #[error("cannot read sources file {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        error: std::io::Error,
    },
    /// The file is not valid TOML, or its top level is not as documented.
    #[error("sources file {}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with the line at fault.
        message: String,
    },
    /// One source is misconfigured.
    #[error("sources file {}: source `{name}`: {problem}", path.display())]
    Source {
        /// The file.
        path: PathBuf,
        /// The source's name as written.
        name: String,
        /// What is wrong (never a secret's value).
        problem: String,
    },
}

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    unknown_sources: UnknownSources,
    unknown_quota: Option<RawQuota>,
    #[serde(default)]
    sources: BTreeMap<String, toml::Table>,
}

/// What to do with sources the file does not name.
#[derive(Deserialize, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum UnknownSources {
    #[default]
    Reject,
    Accept,
}

/// One `[sources.NAME]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    scheme: String,
    #[serde(default)]
    secret_env: Vec<String>,
    #[serde(default)]
    require_json: bool,
    tolerance_seconds: Option<u64>,
    header: Option<String>,
    encoding: Option<Encoding>,
    prefix: Option<String>,
    id_header: Option<String>,
    #[serde(default)]
    event_id: EventIds,
    #[serde(default)]
    drop_headers: Vec<String>,
    quota: Option<RawQuota>,
}

/// Reads the sources file at `path`, taking secrets from `env` (the process environment in
/// production, a map in tests).
pub(crate) fn load(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Sources, SourcesError> {
    let text = std::fs::read_to_string(path).map_err(|error| SourcesError::Read {
        path: path.to_owned(),
        error,
    })?;
    let raw: RawFile = toml::from_str(&text).map_err(|error| SourcesError::Syntax {
        path: path.to_owned(),
        message: error.to_string().trim_end().to_owned(),
    })?;
    let mut known = BTreeMap::new();
    for (name, table) in raw.sources {
        let source = build(&name, table, env).map_err(|problem| SourcesError::Source {
            path: path.to_owned(),
            name: name.clone(),
            problem,
        })?;
        known.insert(name, source);
    }
    let syntax = |message: String| SourcesError::Syntax {
        path: path.to_owned(),
        message,
    };
    let fallback = match (raw.unknown_sources, raw.unknown_quota) {
        (UnknownSources::Accept, quota) => Some(Source {
            quota: quota
                .map(|quota| Quota::new(&quota, "unknown_quota"))
                .transpose()
                .map_err(syntax)?,
            ..Source::unverified()
        }),
        (UnknownSources::Reject, Some(_)) => {
            return Err(syntax(
                "`unknown_quota` applies only with `unknown_sources = \"accept\"`".to_owned(),
            ));
        }
        (UnknownSources::Reject, None) => None,
    };
    Ok(Sources { known, fallback })
}

/// One source from its table; the error says what is wrong.
fn build(
    name: &str,
    table: toml::Table,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Source, String> {
    if !is_valid_name(name) {
        return Err("the name must be 1 to 64 of a-z, 0-9, _ and -".to_owned());
    }
    let raw: RawSource = table
        .try_into()
        .map_err(|error: toml::de::Error| error.message().to_owned())?;
    let scheme = Scheme::from_settings(SchemeSettings {
        scheme: &raw.scheme,
        header: raw.header.as_deref(),
        encoding: raw.encoding,
        prefix: raw.prefix.as_deref(),
        id_header: raw.id_header.as_deref(),
    })
    .map_err(|error| error.to_string())?;
    let tolerance = match raw.tolerance_seconds {
        Some(_) if !scheme.is_timestamped() => {
            let scheme = scheme.name();
            return Err(format!(
                "`tolerance_seconds` does not apply to scheme `{scheme}`"
            ));
        }
        Some(seconds @ 1..=MAX_TOLERANCE_SECONDS) => Duration::from_secs(seconds),
        Some(_) => {
            return Err(format!(
                "`tolerance_seconds` must be 1 to {MAX_TOLERANCE_SECONDS}"
            ));
        }
        None => DEFAULT_TOLERANCE,
    };
    if raw.event_id == EventIds::BodySha256Always && raw.id_header.is_some() {
        return Err(
            "`id_header` is never read with `event_id = \"body_sha256_always\"`: remove one"
                .to_owned(),
        );
    }
    let drop_headers = raw
        .drop_headers
        .iter()
        .map(|name| {
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("`drop_headers`: `{name}` is not a valid header name"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let secrets = raw
        .secret_env
        .iter()
        .map(|var| secret(var, env))
        .collect::<Result<Vec<_>, _>>()?;
    let verifier = Verifier::new(scheme, &secrets, tolerance).map_err(|error| match error {
        KeyError::InvalidSecret { index, problem } => {
            let var = raw.secret_env.get(index).map_or("?", String::as_str);
            format!("environment variable {var}: {problem}")
        }
        KeyError::NoSecrets { .. } => {
            format!("{error}: name the environment variables holding them in `secret_env`")
        }
        KeyError::UnexpectedSecrets { .. } => format!("{error}: remove `secret_env`"),
    })?;
    let quota = raw
        .quota
        .map(|quota| Quota::new(&quota, "quota"))
        .transpose()?;
    Ok(Source {
        verifier,
        require_json: raw.require_json,
        event_ids: raw.event_id,
        drop_headers,
        quota,
    })
}

/// The secret in environment variable `var`: set, non-empty, no surrounding whitespace.
fn secret(var: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<SecretString, String> {
    let value = SecretString::from(
        env(var).ok_or_else(|| format!("environment variable {var} is not set"))?,
    );
    let text = value.expose_secret();
    if text.is_empty() {
        return Err(format!("environment variable {var} is empty"));
    }
    if text.trim() != text {
        return Err(format!(
            "environment variable {var} starts or ends with whitespace"
        ));
    }
    Ok(value)
}

/// A source name as the SPEC allows: `[a-z0-9_-]{1,64}`.
fn is_valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

#[cfg(test)]
#[path = "sources_tests.rs"]
mod tests;
