//! How an error is said: its chain on one line, for the one-line errors and warnings every part prints.

/// The error chain on one line.
pub fn one_line(error: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain().map(ToString::to_string) {
        // Libraries often repeat their cause in their own message: say each thing once.
        if !parts.last().is_some_and(|previous| previous.ends_with(&cause) || previous.contains(&cause)) {
            parts.push(cause);
        }
    }
    parts.join(": ")
}
