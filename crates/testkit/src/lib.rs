//! testfleet's test kit (a dev-dependency only): the scaffolding the
//! integration tests share, written once.
//!
//! - [`peers`]: where the third-party peers live and the peer rule: a missing
//!   peer fails the test under `CI=true` and is reported as skipped outside
//!   CI (`SKIPPED <test>: …` on the real stderr, and a line in the file named
//!   by `TESTFLEET_SKIP_REPORT`, which `cargo xtask test` sums up).
//! - [`process`]: a `testfleet server` process (URL and port from its first
//!   line, killed on drop) and a child killed on drop.
//! - [`moto`]: a `moto_server` (the S3 fake) on a free port, stopped on drop.
//! - [`rng`]: a small seeded RNG, so every random test input replays.
//! - [`sysfs`]: a fake sysfs CPU tree for the host-preparation tests.
//! - [`gitlab`] (feature `gitlab`): a fake GitLab REST API v4 (merge
//!   requests, notes, merge base) with scripted failures.
//! - [`github`] (feature `github`): a fake GitHub REST API (issues and pull
//!   requests, comments, labels, check runs, commit statuses, compare) with
//!   scripted failures and GitHub's rate-limit headers.
//! - [`review_fake`] (feature `gitlab` or `github`): what both fakes share
//!   (scripted [`review_fake::Failure`]s, the request log, the clock).
//! - [`postgres`] (feature `postgres`): a scratch database on the test
//!   PostgreSQL server, dropped with its value.
//! - [`server`], [`agent`], [`wait`], [`sio`] (feature `server`): a
//!   coordinator and agents in the test's process, a manual clock, waiting
//!   for jobs and agents, and plain socket.io agents.
//!
//! Helpers here panic with a clear message when something they set up fails:
//! that is the test failing, which is what a test wants.

pub mod moto;
pub mod peers;
pub mod process;
pub mod rng;
pub mod sysfs;

#[cfg(feature = "github")]
pub mod github;
#[cfg(feature = "gitlab")]
pub mod gitlab;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(any(feature = "gitlab", feature = "github"))]
pub mod review_fake;

#[cfg(feature = "server")]
pub mod agent;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod sio;
#[cfg(feature = "server")]
pub mod wait;

pub use peers::{Peer, in_ci, peer_program, peer_python, require_peer, skip, workspace_root};
pub use rng::Rng;
