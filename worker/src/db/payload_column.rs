//! The `payload` column's value: the body as JSON text, when its content type says JSON and
//! PostgreSQL's `jsonb` can hold it; PostgreSQL parses it (`::jsonb`) in the insert.
//!
//! The same rule as [`Envelope::json_payload`], checked without building the document: a
//! parsed `serde_json::Value` takes about eight times the text's size for a typical webhook
//! (many small objects), which for a 32 MiB body offloaded to S3 would be the largest cost
//! of its write. Here the text is walked once (numbers parsed as `Value` would, so the same
//! documents pass) and checked for `\u0000`, which `jsonb` refuses.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use webhook_shared::envelope::{Envelope, is_json_content_type};

/// The body as JSON text for the `payload` column, or `None` (not JSON, or not for `jsonb`).
pub(crate) fn json_text(envelope: &Envelope) -> Option<&str> {
    if !is_json_content_type(envelope.content_type.as_deref()?) {
        return None;
    }
    let text = std::str::from_utf8(&envelope.body).ok()?;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let fits = NulFree.deserialize(&mut deserializer).ok()?;
    deserializer.end().ok()?;
    fits.then_some(text)
}

/// Walks one JSON value; `true` when no string (or key) in it holds U+0000.
#[derive(Debug, Clone, Copy)]
struct NulFree;

impl<'de> DeserializeSeed<'de> for NulFree {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NulFree {
    type Value = bool;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
        Ok(true)
    }

    fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
        Ok(true)
    }

    fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
        Ok(true)
    }

    fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
        Ok(true)
    }

    fn visit_unit<E>(self) -> Result<bool, E> {
        Ok(true)
    }

    fn visit_str<E>(self, value: &str) -> Result<bool, E> {
        Ok(!value.contains('\0'))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        let mut fits = true;
        while let Some(element) = seq.next_element_seed(NulFree)? {
            fits &= element;
        }
        Ok(fits)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let mut fits = true;
        while let Some(key) = map.next_key_seed(NulFree)? {
            fits &= key & map.next_value_seed(NulFree)?;
        }
        Ok(fits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::envelope;

    fn with(body: &str, content_type: Option<&str>) -> Envelope {
        let mut envelope = envelope("e");
        envelope.body = bytes::Bytes::from(body.to_owned());
        envelope.content_type = content_type.map(str::to_owned);
        envelope
    }

    #[test]
    fn the_same_bodies_pass_as_for_a_parsed_payload() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let bodies = [
            r#"{"a":[1,"two",{"b":null,"c":true,"d":-1.5e3}]}"#,
            r#"{"a":"nul \u0000 inside"}"#,
            r#"{"nul \u0000 key":1}"#,
            r#"{"escaped":"\\u0000 is text"}"#,
            r#"{"big":184467440737095516150}"#,
            r#"{"huge":1e400}"#,
            r#"{"surrogate":"\ud800"}"#,
            r#"{"pair":"\ud83d\ude00"}"#,
            "{broken",
            "[1] trailing",
            "  \"string\"  ",
            "",
            &deep,
        ];
        for body in bodies {
            for content_type in [Some("application/json"), Some("text/plain"), None] {
                let envelope = with(body, content_type);
                assert_eq!(
                    json_text(&envelope).is_some(),
                    envelope.json_payload().is_some(),
                    "{body} as {content_type:?}"
                );
            }
        }
        assert_eq!(
            json_text(&with(r#"{"a":1}"#, Some("application/vnd.api+json"))),
            Some(r#"{"a":1}"#)
        );
    }
}
