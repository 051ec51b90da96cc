//! Tests for the sources file: loading, and every error naming what is wrong.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

const EXAMPLE: &str = r#"
    unknown_sources = "reject"
    [sources.github]
    scheme = "github"
    secret_env = ["GITHUB_WEBHOOK_SECRET", "GITHUB_WEBHOOK_SECRET_PREVIOUS"]
    require_json = true
    [sources.svix]
    scheme = "standard_webhooks"
    secret_env = ["SVIX_SECRET"]
    tolerance_seconds = 600
    [sources.acme]
    scheme = "hmac"
    header = "x-acme-signature"
    encoding = "hex"
    prefix = "sha256="
    id_header = "x-acme-delivery"
    secret_env = ["ACME_SECRET"]
    event_id = "body_sha256"
    drop_headers = ["X-Acme-Token", "x-acme-session"]
    [sources.demo]
    scheme = "none"
"#;

/// Loads `contents` from a fresh temporary file with the test environment.
fn load_text(contents: &str) -> Result<Sources, SourcesError> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let unique = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!(
        "ingest-sources-{}-{unique}.toml",
        std::process::id()
    ));
    std::fs::write(&path, contents).expect("write temp file");
    let result = load(&path, &env);
    std::fs::remove_file(&path).expect("remove temp file");
    result
}

fn env(var: &str) -> Option<String> {
    let value = match var {
        "GITHUB_WEBHOOK_SECRET" => "It's a Secret to Everybody",
        "GITHUB_WEBHOOK_SECRET_PREVIOUS" | "ACME_SECRET" => "hunter2-previous",
        "SVIX_SECRET" => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "EMPTY" => "",
        "PADDED" => "hunter2\n",
        _ => return None,
    };
    Some(value.to_owned())
}

fn error(contents: &str) -> String {
    load_text(contents).expect_err("must fail").to_string()
}

#[test]
fn the_example_loads() {
    let sources = load_text(EXAMPLE).expect("valid");
    assert!(sources.fallback.is_none());
    let names: Vec<_> = sources.known.keys().collect();
    assert_eq!(names, ["acme", "demo", "github", "svix"]);
    let github = sources.get("github").expect("configured");
    assert!(github.require_json);
    assert_eq!(github.verifier.scheme(), "github");
    // The secrets came from the environment: GitHub's documented example verifies.
    let mut headers = http::HeaderMap::new();
    let signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
    headers.insert("x-hub-signature-256", signature.parse().expect("ASCII"));
    let now = chrono::Utc::now();
    assert!(
        github
            .verifier
            .verify(&headers, b"Hello, World!", now)
            .is_ok()
    );
    let demo = sources.get("demo").expect("configured");
    assert!(!demo.require_json);
    assert_eq!(demo.event_ids, EventIds::Provider);
    assert!(demo.drop_headers.is_empty());
    let acme = sources.get("acme").expect("configured");
    assert_eq!(acme.event_ids, EventIds::BodySha256);
    assert_eq!(acme.drop_headers, ["x-acme-token", "x-acme-session"]);
    assert!(sources.get("other").is_none());
    assert!(sources.resolve("other").is_none());
    let debug = format!("{sources:?}");
    assert!(
        !debug.contains("Secret to Everybody") && !debug.contains("hunter2"),
        "{debug}"
    );
}

#[test]
fn unknown_sources_can_be_accepted() {
    let sources = load_text("unknown_sources = \"accept\"").expect("valid");
    assert!(sources.fallback.is_some());
    assert!(sources.get("anything").is_none());
    assert_eq!(
        sources.resolve("anything").map(|s| s.verifier.scheme()),
        Some("none")
    );
    let empty = load_text("").expect("valid");
    assert!(empty.fallback.is_none());
    let open = Sources::open();
    assert!(open.fallback.is_some() && open.resolve("demo").is_some());
}

#[test]
fn unreadable_and_invalid_files_name_the_file() {
    let missing = std::env::temp_dir().join("ingest-sources-does-not-exist.toml");
    let err = load(&missing, &env).expect_err("missing").to_string();
    assert!(
        err.starts_with("cannot read sources file ") && err.contains("does-not-exist"),
        "{err}"
    );
    for (contents, needle) in [
        ("[sources.a\nscheme = 1", "line 1"),
        ("unknown_sources = \"maybe\"", "unknown variant `maybe`"),
        ("colour = \"blue\"", "unknown field `colour`"),
    ] {
        let err = error(contents);
        assert!(
            err.starts_with("sources file ") && err.contains("ingest-sources-"),
            "{err}"
        );
        assert!(err.contains(needle), "{err}");
    }
}

/// Each line: one source as an inline table, `=>`, and what the error must say after
/// "source `NAME`: ".
const MISTAKES: &str = r#"
GitHub = { scheme = "none" } => the name must be 1 to 64 of a-z, 0-9, _ and -
a = { scheme = "none", secrets = ["X"] } => unknown field `secrets`
a = { secret_env = ["ACME_SECRET"] } => missing field `scheme`
a = { scheme = "gitlab" } => unknown scheme `gitlab`; expected standard_webhooks, github, stripe, shopify, hmac or none
a = { scheme = "github" } => scheme `github` needs at least one secret: name the environment variables holding them in `secret_env`
a = { scheme = "stripe", secret_env = [] } => scheme `stripe` needs at least one secret
a = { scheme = "none", secret_env = ["ACME_SECRET"] } => scheme `none` takes no secrets: remove `secret_env`
a = { scheme = "github", secret_env = ["ACME_SECRET", "NOPE"] } => environment variable NOPE is not set
a = { scheme = "github", secret_env = ["EMPTY"] } => environment variable EMPTY is empty
a = { scheme = "github", secret_env = ["PADDED"] } => environment variable PADDED starts or ends with whitespace
a = { scheme = "standard_webhooks", secret_env = ["SVIX_SECRET", "ACME_SECRET"] } => environment variable ACME_SECRET: the part after whsec_ is not base64
a = { scheme = "github", header = "x-sig", secret_env = ["ACME_SECRET"] } => `header` does not apply to scheme `github`
a = { scheme = "hmac", encoding = "hex", secret_env = ["ACME_SECRET"] } => scheme `hmac` needs `header`
a = { scheme = "hmac", header = "x-sig", encoding = "base32" } => unknown variant `base32`, expected `hex` or `base64`
a = { scheme = "none", id_header = "bad header" } => `id_header` is not a valid header name
a = { scheme = "stripe", secret_env = ["ACME_SECRET"], tolerance_seconds = 0 } => `tolerance_seconds` must be 1 to 86400
a = { scheme = "github", secret_env = ["ACME_SECRET"], tolerance_seconds = 60 } => `tolerance_seconds` does not apply to scheme `github`
a = { scheme = "none", require_json = "yes" } => invalid type: string "yes", expected a boolean
a = { scheme = "none", event_id = "uuid" } => unknown variant `uuid`, expected one of `provider`, `body_sha256`, `body_sha256_always`
a = { scheme = "none", id_header = "x-id", event_id = "body_sha256_always" } => `id_header` is never read with `event_id = "body_sha256_always"`: remove one
a = { scheme = "none", drop_headers = ["x-token", "bad header"] } => `drop_headers`: `bad header` is not a valid header name
a = { scheme = "none", drop_headers = "x-token" } => invalid type: string "x-token", expected a sequence
"#;

#[test]
fn source_mistakes_name_the_source_and_the_fault() {
    for case in MISTAKES.lines().filter(|line| !line.is_empty()) {
        let (source, expected) = case.split_once(" => ").expect("case has =>");
        let (name, _) = source.split_once(" = ").expect("case names a source");
        let err = error(&format!("[sources]\n{source}"));
        let wanted = format!("source `{name}`: {expected}");
        assert!(err.starts_with("sources file "), "{err}");
        assert!(err.contains(&wanted), "{err}\n  expected {wanted}");
        assert!(
            !err.contains("hunter2") && !err.contains("MfKQ9r8G"),
            "{err}"
        );
    }
}

/// A source with event ids from `event_ids` and nothing else of note.
fn source(event_ids: EventIds) -> Source {
    Source {
        event_ids,
        ..Source::unverified()
    }
}

#[test]
fn body_ids_hash_the_source_and_the_body() {
    // Pinned: sha256(b"acme\0{\"n\":1}"), as the README documents.
    let id = body_event_id("acme", br#"{"n":1}"#);
    assert_eq!(
        id,
        "sha256:a482ad4ca8387572449ed65114dabf6bee637e1e5cc7616e2ac20e79b533a1a8"
    );
    assert!(id.len() <= 255 && id.bytes().all(|b| b.is_ascii_graphic()));
    assert_eq!(body_event_id("acme", br#"{"n":1}"#), id, "deterministic");
    assert_ne!(body_event_id("acme", br#"{"n":2}"#), id, "another body");
    assert_ne!(body_event_id("other", br#"{"n":1}"#), id, "another source");
    // The zero byte keeps the source and the body apart.
    assert_ne!(body_event_id("ab", b"c"), body_event_id("a", b"bc"));
    assert_eq!(body_event_id("a", b"").len(), 71);
}

#[test]
fn each_setting_chooses_the_id_as_documented() {
    let body = b"ping";
    let provided = || Some("delivery-1".to_owned());
    let derived = body_event_id("src", body);

    let provider = source(EventIds::Provider);
    assert_eq!(provider.event_id("src", provided(), body), "delivery-1");
    let first = provider.event_id("src", None, body);
    let second = provider.event_id("src", None, body);
    assert_ne!(first, second, "without an id, every request is new");
    let uuid = uuid::Uuid::parse_str(&first).expect("a UUID");
    assert_eq!(uuid.get_version_num(), 7);

    let body_sha256 = source(EventIds::BodySha256);
    assert_eq!(body_sha256.event_id("src", provided(), body), "delivery-1");
    assert_eq!(body_sha256.event_id("src", None, body), derived);
    assert_eq!(body_sha256.event_id("src", None, body), derived, "a retry");

    let always = source(EventIds::BodySha256Always);
    assert_eq!(always.event_id("src", provided(), body), derived);
    assert_eq!(
        always.event_id("src", Some("replay-2".to_owned()), body),
        derived
    );
    assert_eq!(always.event_id("src", None, body), derived);

    // Unknown sources, when accepted, keep the provider's behaviour.
    let open = Sources::open();
    let fallback = open.resolve("anything").expect("accepted");
    assert_eq!(fallback.event_ids, EventIds::Provider);
    assert!(fallback.drop_headers.is_empty());
}

#[test]
fn streamed_bodies_get_the_ids_whole_bodies_get() {
    let body = b"a body in three pieces";
    let stream = |source: &Source, header_id: Option<&str>, verified: Option<&str>| {
        let mut id = source.streamed_event_id("src", header_id);
        for piece in body.chunks(8) {
            id.update(piece);
        }
        id.finish(verified.map(str::to_owned))
    };
    for setting in [
        EventIds::Provider,
        EventIds::BodySha256,
        EventIds::BodySha256Always,
    ] {
        let source = source(setting);
        // (id in the headers, id the verifier found in the end: Stripe's is in the body)
        for (header_id, verified) in [
            (Some("delivery-1"), Some("delivery-1")),
            (None, Some("evt_1")),
            (None, None),
        ] {
            let streamed = stream(&source, header_id, verified);
            let whole = source.event_id("src", verified.map(str::to_owned), body);
            if setting == EventIds::Provider && verified.is_none() {
                let uuid = uuid::Uuid::parse_str(&streamed).expect("a UUID");
                assert_eq!(uuid.get_version_num(), 7);
            } else {
                assert_eq!(streamed, whole, "{setting:?} {header_id:?} {verified:?}");
            }
        }
    }
}

#[test]
fn quotas_are_checked_and_named_when_wrong() {
    let sources =
        load_text("[sources.demo]\nscheme = \"none\"\nquota = { per_second = 50, burst = 200 }\n")
            .expect("valid");
    assert!(sources.get("demo").is_some_and(|s| s.quota.is_some()));
    let zero = error("[sources.demo]\nscheme = \"none\"\nquota = { per_second = 0, burst = 1 }\n");
    assert!(zero.contains("source `demo`: `quota.per_second`"), "{zero}");
    let unknown_key = error("[sources.demo]\nscheme = \"none\"\nquota = { rate = 1, burst = 1 }\n");
    assert!(
        unknown_key.contains("demo") && unknown_key.contains("rate"),
        "{unknown_key}"
    );
    let rejecting = error("unknown_quota = { per_second = 1, burst = 1 }\n");
    assert!(
        rejecting.contains("`unknown_quota` applies only"),
        "{rejecting}"
    );
    let bad_unknown =
        error("unknown_sources = \"accept\"\nunknown_quota = { per_second = 1, burst = 0 }\n");
    assert!(
        bad_unknown.contains("`unknown_quota.burst`"),
        "{bad_unknown}"
    );
}
