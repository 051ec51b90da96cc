//! The event id of a Stripe webhook: the top-level `id` string of its JSON body, read from
//! the whole body ([`event_id`]) or from its first bytes when the body is streamed
//! ([`leading_event_id`]). Apart from [`super::stripe`] (the signature) so that the streaming
//! check can use it without depending on the Stripe scheme.

use std::borrow::Cow;

use super::common;

/// The top-level `id` of a Stripe event; nothing else of the body is read.
#[derive(serde::Deserialize)]
struct EventId<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
}

/// The event id in a Stripe body: its top-level `id` string, if the body is a JSON object
/// with one and it is a valid event id.
pub(super) fn event_id(body: &[u8]) -> Option<String> {
    // serde would also read a struct from a JSON array (`["evt_1"]`): only objects count.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    let event: EventId<'_> = serde_json::from_slice(body).ok()?;
    common::event_id(&event.id?)
}

/// The event id of a Stripe body of which only the first bytes are at hand: the value of the
/// first top-level key `id`, if the bytes are a JSON object up to it and it is a valid event
/// id string. The rest of the body is not read (Stripe writes `id` first).
pub(super) fn leading_event_id(head: &[u8]) -> Option<String> {
    if head.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    let mut found = None;
    let mut deserializer = serde_json::Deserializer::from_slice(head);
    // The seed stops the parse with an error once it has the id: the error is expected.
    let _stopped = serde::de::DeserializeSeed::deserialize(FirstId(&mut found), &mut deserializer);
    found.and_then(|id| common::event_id(&id))
}

/// Reads a JSON object's keys until `id` and puts its string value in the slot.
struct FirstId<'a>(&'a mut Option<String>);

/// The error that ends the parse once the id is found.
const FOUND: &str = "found the id";

impl<'de> serde::de::DeserializeSeed<'de> for FirstId<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for FirstId<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        use serde::de::Error as _;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if key == "id" {
                *self.0 = map.next_value::<Option<String>>()?;
                return Err(A::Error::custom(FOUND));
            }
            map.next_value::<serde::de::IgnoredAny>()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_id_is_the_top_level_id_string_only() {
        assert_eq!(
            event_id(br#"{"id":"evt_1","data":{"id":"x"}}"#).as_deref(),
            Some("evt_1")
        );
        assert_eq!(event_id(br#"{"data":{"id":"evt_nested"}}"#), None);
        assert_eq!(event_id(br#"{"id":42}"#), None);
        assert_eq!(event_id(br#"{"id":"has space"}"#), None);
        assert_eq!(
            event_id(br#"{"id":"evt_\u0031"}"#).as_deref(),
            Some("evt_1")
        );
        assert_eq!(event_id(br#"["evt_1"]"#), None);
        assert_eq!(event_id(b"id=evt_1"), None);
        assert_eq!(event_id(b"\xff\xfe"), None);
    }

    #[test]
    fn the_leading_id_is_read_from_the_first_bytes_only() {
        let big = format!(r#"{{"id":"evt_1","data":"{}""#, "x".repeat(100_000));
        assert_eq!(leading_event_id(big.as_bytes()).as_deref(), Some("evt_1"));
        let later = br#" {"object":"event","data":{"id":"x","n":[1,{}]},"id":"evt_2","#;
        assert_eq!(leading_event_id(later).as_deref(), Some("evt_2"));
        for none in [
            &br#"{"data":{"id":"evt_nested"}"#[..],
            br#"{"id":42,"#,
            br#"{"id":"has space"}"#,
            br#"["evt_1"]"#,
            br#"{"object":"event","#,
            b"\xff",
        ] {
            assert_eq!(
                leading_event_id(none),
                None,
                "{}",
                String::from_utf8_lossy(none)
            );
        }
        assert_eq!(
            leading_event_id(br#"{"id":"evt_\u0031"}"#).as_deref(),
            Some("evt_1")
        );
    }
}
