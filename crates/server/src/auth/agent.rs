//! Agents' secrets, checked at the socket.io handshake and on the agent HTTP
//! routes: a host's own secret (stored hashed, set with `testfleet agents
//! secret`) wins; then the per-host secrets of the config file; then the
//! shared secret.

use crate::coordinator::Coordinator;

/// Why an agent was refused; the message reaches the agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentAuthError {
    #[error("missing secret in auth payload")]
    Missing,
    #[error("wrong secret for host `{0}`")]
    Wrong(String),
    #[error("the secret of host `{0}` has been revoked")]
    Revoked(String),
    /// Per-host secrets are configured, none for this host and no shared one.
    #[error("no secret is configured for host `{0}`")]
    NotConfigured(String),
    /// The store could not be asked (logged on the coordinator).
    #[error("the coordinator could not check the secret; try again")]
    Unavailable,
}

/// Checks `hostname`'s `secret`.
pub async fn check_agent_secret(
    coordinator: &Coordinator,
    hostname: &str,
    secret: Option<String>,
) -> Result<(), AgentAuthError> {
    match coordinator.views().agent_secret(hostname).await {
        Ok(Some(stored)) if stored.revoked => Err(AgentAuthError::Revoked(hostname.to_owned())),
        Ok(Some(stored)) => {
            let secret = secret.ok_or(AgentAuthError::Missing)?;
            let ok = tokio::task::spawn_blocking(move || {
                super::verify_secret(&secret, &stored.secret_hash)
            })
            .await
            .unwrap_or(false);
            if ok {
                Ok(())
            } else {
                Err(AgentAuthError::Wrong(hostname.to_owned()))
            }
        }
        Ok(None) => coordinator
            .config
            .check_agent_secret(hostname, secret.as_deref()),
        Err(e) => {
            tracing::error!("failed to look up the agent secret: {e}");
            Err(AgentAuthError::Unavailable)
        }
    }
}
