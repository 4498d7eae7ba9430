//! Secrets in the configuration (SASL passwords, TLS key passwords, OAuth
//! client secrets, tokens) never reach output: `distill-watch config` prints
//! them as [`REDACTED`], `Config`'s `Debug` hides them, and the binary runs
//! every log line and error message through [`scrub`], which replaces any
//! configured secret value wherever it appears (librdkafka's own messages
//! included, since they reach the log through the same writer).

use std::borrow::Cow;
use std::sync::RwLock;

/// What a secret is shown as.
pub const REDACTED: &str = "[redacted]";

/// Whether a librdkafka-style key (`sasl.password`, `ssl.key.pem`) or an
/// environment variable's name (`..._SASL_PASSWORD`) holds a secret. Judged
/// by its words, so that keys librdkafka adds later are covered too:
/// `*.password`, `*.secret`, `*token*`, private keys and key stores, JAAS and
/// OAuth bearer configs (they embed credentials). Paths to key files
/// (`ssl.key.location`) are not secrets and stay visible.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    let words: Vec<&str> = key.split(['.', '_', '-']).collect();
    if words.last() == Some(&"location") {
        return false;
    }
    let has = |w: &str| words.contains(&w);
    has("password")
        || has("passwd")
        || has("secret")
        || has("token")
        || has("credentials")
        || has("jaas")
        || (has("key") && (has("pem") || has("ssl")))
        || has("keystore")
        || (has("oauthbearer") && has("config"))
        || words
            .iter()
            .any(|w| w.ends_with("secret") || w.ends_with("token"))
}

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Adds values to hide from everything [`scrub`] sees. Empty values are
/// ignored (they would match everywhere and hide nothing).
pub fn register<I, S>(values: I)
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    for v in values {
        let v = v.into();
        if !v.is_empty() && !secrets.contains(&v) {
            secrets.push(v);
        }
    }
    // Longest first, so a secret that contains another is hidden whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// Registers the values of the process's `DISTILL_WATCH_*` variables that
/// name secrets, before any configuration is parsed: an error in parsing it
/// must not echo them either.
pub fn register_from_env(prefix: &str) {
    register(
        std::env::vars()
            .filter(|(k, _)| k.starts_with(prefix) && is_secret_key(k))
            .map(|(_, v)| v),
    );
}

/// `text` with every registered secret replaced by [`REDACTED`].
pub fn scrub(text: &str) -> Cow<'_, str> {
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for s in secrets.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), REDACTED);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_by_their_words() {
        for k in [
            "sasl.password",
            "ssl.key.password",
            "ssl.keystore.password",
            "ssl.key.pem",
            "sasl.oauthbearer.client.secret",
            "sasl.oauthbearer.config",
            "sasl.jaas.config",
            "DISTILL_WATCH_LIBRDKAFKA_SASL_PASSWORD",
            "DISTILL_WATCH_PRODUCER_SSL_KEY_PASSWORD",
            "api_token",
            "clientsecret",
        ] {
            assert!(is_secret_key(k), "{k} is a secret");
        }
        for k in [
            "sasl.username",
            "sasl.mechanisms",
            "security.protocol",
            "ssl.key.location",
            "ssl.ca.location",
            "linger.ms",
            "DISTILL_WATCH_KAFKA_BOOTSTRAP_SERVERS",
            "DISTILL_WATCH_LIBRDKAFKA_SASL_USERNAME",
        ] {
            assert!(!is_secret_key(k), "{k} is not a secret");
        }
    }

    #[test]
    fn scrub_hides_every_registered_value_and_leaves_other_text() {
        register(["s3cr3t-pw-for-scrub-test", "", "s3cr3t-pw"]);
        assert_eq!(
            scrub("login with s3cr3t-pw-for-scrub-test failed; s3cr3t-pw again"),
            "login with [redacted] failed; [redacted] again"
        );
        assert!(matches!(scrub("nothing here"), Cow::Borrowed(_)));
    }
}
