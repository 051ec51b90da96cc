//! A [`Scheme`] as a configuration file describes it: a scheme name and the keys that only
//! some schemes take (`header`, `encoding`, `prefix`, `id_header`). A key given to a scheme
//! that does not use it is an error rather than silently ignored.

use http::HeaderName;

use super::{Encoding, HmacScheme, Scheme};

/// The scheme-related settings of one source, as written.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SchemeSettings<'a> {
    /// `standard_webhooks`, `github`, `stripe`, `shopify`, `hmac` or `none`.
    pub scheme: &'a str,
    /// The signature header (`hmac` only, required there).
    pub header: Option<&'a str>,
    /// How the MAC is written (`hmac` only, required there).
    pub encoding: Option<Encoding>,
    /// Text before the MAC, such as `sha256=` (`hmac` only).
    pub prefix: Option<&'a str>,
    /// The header holding the event id (`hmac` and `none` only).
    pub id_header: Option<&'a str>,
}

/// Why settings do not describe a scheme.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SettingsError {
    /// The scheme name is not one of the known ones.
    #[error(
        "unknown scheme `{0}`; expected standard_webhooks, github, stripe, shopify, hmac or none"
    )]
    UnknownScheme(String),
    /// The scheme needs a key that is absent.
    #[error("scheme `{scheme}` needs `{key}`")]
    Missing {
        /// The scheme.
        scheme: &'static str,
        /// The absent key.
        key: &'static str,
    },
    /// A key is set that the scheme does not use.
    #[error("`{key}` does not apply to scheme `{scheme}`")]
    NotApplicable {
        /// The scheme.
        scheme: &'static str,
        /// The key.
        key: &'static str,
    },
    /// A header key does not hold a valid header name.
    #[error("`{key}` is not a valid header name")]
    InvalidHeaderName {
        /// The key.
        key: &'static str,
    },
}

impl Scheme {
    /// The scheme `settings` describe.
    pub(crate) fn from_settings(settings: SchemeSettings<'_>) -> Result<Self, SettingsError> {
        let scheme = match settings.scheme {
            "standard_webhooks" => Self::StandardWebhooks,
            "github" => Self::GitHub,
            "stripe" => Self::Stripe,
            "shopify" => Self::Shopify,
            "hmac" => {
                let missing = |key| SettingsError::Missing {
                    scheme: "hmac",
                    key,
                };
                Self::Hmac(HmacScheme {
                    header: header_name("header", settings.header)?
                        .ok_or_else(|| missing("header"))?,
                    encoding: settings.encoding.ok_or_else(|| missing("encoding"))?,
                    prefix: settings
                        .prefix
                        .filter(|prefix| !prefix.is_empty())
                        .map(str::to_owned),
                    id_header: header_name("id_header", settings.id_header)?,
                })
            }
            "none" => Self::None {
                id_header: header_name("id_header", settings.id_header)?,
            },
            other => return Err(SettingsError::UnknownScheme(other.to_owned())),
        };
        let is_hmac = matches!(scheme, Self::Hmac(_));
        let takes_id_header = is_hmac || matches!(scheme, Self::None { .. });
        let misplaced = [
            ("header", settings.header.is_some() && !is_hmac),
            ("encoding", settings.encoding.is_some() && !is_hmac),
            ("prefix", settings.prefix.is_some() && !is_hmac),
            (
                "id_header",
                settings.id_header.is_some() && !takes_id_header,
            ),
        ];
        match misplaced.into_iter().find(|(_, misplaced)| *misplaced) {
            Some((key, _)) => Err(SettingsError::NotApplicable {
                scheme: scheme.name(),
                key,
            }),
            None => Ok(scheme),
        }
    }
}

/// The header name in key `key`, if set.
fn header_name(
    key: &'static str,
    value: Option<&str>,
) -> Result<Option<HeaderName>, SettingsError> {
    value
        .map(|value| {
            HeaderName::from_bytes(value.as_bytes())
                .map_err(|_| SettingsError::InvalidHeaderName { key })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(scheme: &str) -> SchemeSettings<'_> {
        SchemeSettings {
            scheme,
            ..SchemeSettings::default()
        }
    }

    #[test]
    fn every_scheme_name_is_understood() {
        for name in ["standard_webhooks", "github", "stripe", "shopify", "none"] {
            let scheme = Scheme::from_settings(settings(name)).expect("known");
            assert_eq!(scheme.name(), name);
        }
        let hmac = Scheme::from_settings(SchemeSettings {
            header: Some("X-Acme-Signature"),
            encoding: Some(Encoding::Hex),
            prefix: Some("sha256="),
            id_header: Some("x-acme-delivery"),
            ..settings("hmac")
        })
        .expect("complete");
        assert_eq!(
            hmac,
            Scheme::Hmac(HmacScheme {
                header: HeaderName::from_static("x-acme-signature"),
                encoding: Encoding::Hex,
                prefix: Some("sha256=".to_owned()),
                id_header: Some(HeaderName::from_static("x-acme-delivery")),
            })
        );
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (
                settings("GitHub"),
                "unknown scheme `GitHub`; expected standard_webhooks, github, stripe, shopify, hmac or none",
            ),
            (settings("hmac"), "scheme `hmac` needs `header`"),
            (
                SchemeSettings {
                    header: Some("x-sig"),
                    ..settings("hmac")
                },
                "scheme `hmac` needs `encoding`",
            ),
            (
                SchemeSettings {
                    header: Some("bad header"),
                    ..settings("hmac")
                },
                "`header` is not a valid header name",
            ),
            (
                SchemeSettings {
                    header: Some("x-sig"),
                    ..settings("github")
                },
                "`header` does not apply to scheme `github`",
            ),
            (
                SchemeSettings {
                    prefix: Some("sha256="),
                    ..settings("none")
                },
                "`prefix` does not apply to scheme `none`",
            ),
            (
                SchemeSettings {
                    id_header: Some("x-id"),
                    ..settings("stripe")
                },
                "`id_header` does not apply to scheme `stripe`",
            ),
        ];
        for (settings, message) in cases {
            let err = Scheme::from_settings(settings).expect_err("invalid");
            assert_eq!(err.to_string(), message);
        }
    }
}
