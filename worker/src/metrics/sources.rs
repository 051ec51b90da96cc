//! The `source` label of the per-source metrics: the names listed in `METRICS_SOURCES`, and
//! `other` for every other source (and for messages without a `source` attribute), so the
//! number of series stays bounded whatever the providers send.

use std::sync::Arc;

/// The label of every source not listed.
pub(crate) const OTHER: &str = "other";
/// Most names `METRICS_SOURCES` may list.
pub(crate) const MAX_SOURCES: usize = 100;

/// The labels per-source metrics use.
#[derive(Debug, Clone)]
pub(crate) struct SourceLabels {
    listed: Arc<[Arc<str>]>,
    other: Arc<str>,
}

impl Default for SourceLabels {
    fn default() -> Self {
        Self::new(&[])
    }
}

impl SourceLabels {
    /// Labels for `names` (checked by the configuration), plus `other`.
    pub(crate) fn new(names: &[String]) -> Self {
        Self {
            listed: names.iter().map(|name| Arc::from(name.as_str())).collect(),
            other: Arc::from(OTHER),
        }
    }

    /// The label of a message from `source`.
    pub(crate) fn label(&self, source: Option<&str>) -> Arc<str> {
        source
            .and_then(|source| self.listed.iter().find(|name| ***name == *source))
            .unwrap_or(&self.other)
            .clone()
    }

    /// Every label, `other` last.
    pub(crate) fn all(&self) -> impl Iterator<Item = &Arc<str>> {
        self.listed.iter().chain(std::iter::once(&self.other))
    }
}

/// Checks one `METRICS_SOURCES` entry: a source name as the SPEC allows, `[a-z0-9_-]{1,64}`,
/// and not `other`.
pub(crate) fn check_name(name: &str) -> Result<String, String> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !valid {
        return Err(format!(
            "`{name}` is not a source name ([a-z0-9_-]{{1,64}})"
        ));
    }
    if name == OTHER {
        return Err(format!("`{OTHER}` is the label of every source not listed"));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_sources_keep_their_name_and_the_rest_are_other() {
        let labels = SourceLabels::new(&["github".to_owned(), "stripe".to_owned()]);
        assert_eq!(&*labels.label(Some("github")), "github");
        assert_eq!(&*labels.label(Some("acme")), "other");
        assert_eq!(&*labels.label(None), "other");
        let all: Vec<&str> = labels.all().map(|label| &**label).collect();
        assert_eq!(all, ["github", "stripe", "other"]);
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(check_name("shop_1"), Ok("shop_1".to_owned()));
        assert!(check_name("Shop").is_err());
        assert!(check_name("").is_err());
        assert!(check_name("other").is_err());
    }
}
