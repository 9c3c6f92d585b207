//! Names of the sessions `session-trigger` creates: `<sanitized prefix>-<unix seconds>`, the
//! prefix from the template's display name or else the scheduled session's name.

use agentic_crds::names::MAX_SESSION_NAME_LEN;
use k8s_openapi::jiff::Timestamp;

/// Longest prefix [`sanitize`] returns (the original's limit).
pub const MAX_PREFIX_LEN: usize = 40;

/// What [`sanitize`] returns when nothing usable is left.
pub const EMPTY_PREFIX: &str = "run";

/// The original's `sanitizeName`, byte by byte: ASCII letters and digits are kept (lower-cased),
/// every run of other bytes (each byte of a non-ASCII character among them) becomes one `-`,
/// never leading; cut to [`MAX_PREFIX_LEN`], trailing `-` trimmed; empty gives
/// [`EMPTY_PREFIX`].
pub fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_PREFIX_LEN + 1));
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() {
            out.push(char::from(byte.to_ascii_lowercase()));
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(MAX_PREFIX_LEN);
    finish(out)
}

/// The new session's name: `<prefix>-<unix seconds>`, as the original (40 + 1 + 10 characters at
/// most). The prefix would be cut further only if that ever exceeded [`MAX_SESSION_NAME_LEN`],
/// which it cannot while the prefix is at most [`MAX_PREFIX_LEN`].
pub fn session_name(prefix: &str, unix_seconds: i64) -> String {
    let suffix = format!("-{unix_seconds}");
    let room = MAX_SESSION_NAME_LEN.saturating_sub(suffix.len());
    let mut prefix = prefix.to_string();
    // `prefix` comes from `sanitize`: ASCII only, so any byte index is a char boundary.
    prefix.truncate(room);
    format!("{}{suffix}", finish(prefix))
}

/// The display name a created session gets: the template's, with the UTC time of the run in
/// the original's format, `<name> (Jan 2, 2006 - 15:04:05)`.
pub fn stamped_display_name(display_name: &str, now: Timestamp) -> String {
    format!("{display_name} ({})", now.strftime("%b %-d, %Y - %H:%M:%S"))
}

fn finish(mut prefix: String) -> String {
    while prefix.ends_with('-') {
        prefix.pop();
    }
    if prefix.is_empty() {
        EMPTY_PREFIX.to_string()
    } else {
        prefix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizing_matches_the_original_byte_for_byte() {
        let long = "Abc".repeat(67); // 201 characters
        for (input, expected) in [
            // Scheduled session names, as the backend makes them.
            (
                "schedule-4b6f0d52-9a3e-4c1b-8f7d-2e5a6b7c8d9e",
                "schedule-4b6f0d52-9a3e-4c1b-8f7d-2e5a6b7",
            ),
            ("my-schedule", "my-schedule"),
            // Display names.
            ("Nightly Report", "nightly-report"),
            ("  Daily   standup!! ", "daily-standup"),
            ("MiXeD CaSe 42", "mixed-case-42"),
            ("already-lower-1", "already-lower-1"),
            ("under_score.dot", "under-score-dot"),
            // Empty and symbols only: nothing usable.
            ("", "run"),
            ("!!!", "run"),
            ("---", "run"),
            ("   ", "run"),
            // Non-ASCII: each byte is "other"; runs of them collapse.
            ("Résumé", "r-sum"),
            ("über cool", "ber-cool"),
            ("日本語", "run"),
            ("naïve 🙂 plan", "na-ve-plan"),
            // Long: 40 at most, and a cut landing after a '-' is trimmed.
            (long.as_str(), &"abc".repeat(14)[..40]),
            (&format!("{}-tail", "a".repeat(39)), &"a".repeat(39)),
        ] {
            assert_eq!(sanitize(input), expected, "sanitize({input:?})");
        }
        let two_hundred = "x".repeat(200);
        assert_eq!(sanitize(&two_hundred), "x".repeat(40));
        for input in ["", "Ω", &long, &two_hundred, "a-b", "A B C"] {
            let out = sanitize(input);
            assert!(out.len() <= MAX_PREFIX_LEN && !out.is_empty(), "{input:?}");
            assert!(!out.starts_with('-') && !out.ends_with('-'), "{input:?}");
            assert!(!out.contains("--"), "{input:?}");
            assert!(
                out.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "{input:?}"
            );
        }
    }

    #[test]
    fn session_names_end_in_the_unix_seconds_and_always_fit_the_crd() {
        assert_eq!(
            session_name("nightly-report", 1_767_225_600),
            "nightly-report-1767225600"
        );
        assert_eq!(session_name("run", 1_767_225_600), "run-1767225600");
        let backend = sanitize("schedule-4b6f0d52-9a3e-4c1b-8f7d-2e5a6b7c8d9e");
        let name = session_name(&backend, 1_767_225_600);
        // The original's name for the backend's CronJobs, whole: 51 characters.
        assert_eq!(name, "schedule-4b6f0d52-9a3e-4c1b-8f7d-2e5a6b7-1767225600");
        assert_eq!(name.len(), MAX_PREFIX_LEN + 11);
        for prefix in [
            sanitize(&"y".repeat(200)),
            sanitize("日本語"),
            "a".repeat(40),
        ] {
            let name = session_name(&prefix, 1_767_225_600);
            assert!(name.len() <= MAX_SESSION_NAME_LEN, "{name}");
            assert!(name.ends_with("-1767225600"), "{name}");
        }
    }

    #[test]
    fn display_names_get_the_utc_time_in_the_originals_format() {
        let at: Timestamp = "2026-01-02T03:04:05Z".parse().unwrap();
        assert_eq!(
            stamped_display_name("Nightly", at),
            "Nightly (Jan 2, 2026 - 03:04:05)"
        );
        let at: Timestamp = "2026-11-23T23:59:09+05:00".parse().unwrap();
        assert_eq!(
            stamped_display_name("Ünïcode", at),
            "Ünïcode (Nov 23, 2026 - 18:59:09)"
        );
    }
}
