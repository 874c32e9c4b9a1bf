//! What an artifact is kept as: a file matched by an `always` or `on_failure` glob, or
//! the whole stdout or stderr of a failed attempt. The agent names it when uploading,
//! the coordinator checks it, the store keeps it as text and the REST API shows it.

use serde::{Deserialize, Serialize};

/// Why an artifact was kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactKind {
    /// Matched an `always` glob.
    Always,
    /// Matched an `on_failure` glob of an attempt that did not pass.
    OnFailure,
    /// The whole stdout of a failed attempt.
    Stdout,
    /// The whole stderr of a failed attempt.
    Stderr,
}

/// A kind that is none of `always`, `on_failure`, `stdout` and `stderr`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown artifact kind `{0}` (always, on_failure, stdout or stderr)")]
pub struct UnknownArtifactKind(pub String);

impl ArtifactKind {
    /// Every kind, in the order the API documents them.
    pub const ALL: [ArtifactKind; 4] = [
        ArtifactKind::Always,
        ArtifactKind::OnFailure,
        ArtifactKind::Stdout,
        ArtifactKind::Stderr,
    ];

    /// The name on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::Always => "always",
            ArtifactKind::OnFailure => "on_failure",
            ArtifactKind::Stdout => "stdout",
            ArtifactKind::Stderr => "stderr",
        }
    }
}

impl std::fmt::Display for ArtifactKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad` so that table columns (`{:<10}`) line up.
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for ArtifactKind {
    type Err = UnknownArtifactKind;

    fn from_str(s: &str) -> Result<ArtifactKind, UnknownArtifactKind> {
        ArtifactKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownArtifactKind(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_text_and_json() {
        for k in ArtifactKind::ALL {
            assert_eq!(k.as_str().parse::<ArtifactKind>(), Ok(k));
            assert_eq!(
                serde_json::to_value(k).expect("json"),
                serde_json::Value::String(k.as_str().into())
            );
        }
        assert_eq!(format!("{:<12}|", ArtifactKind::OnFailure), "on_failure  |");
    }

    #[test]
    fn unknown_kind_is_a_clear_error() {
        let e = "logs".parse::<ArtifactKind>().expect_err("unknown");
        assert_eq!(
            e.to_string(),
            "unknown artifact kind `logs` (always, on_failure, stdout or stderr)"
        );
        assert!(serde_json::from_str::<ArtifactKind>("\"Always\"").is_err());
    }
}
