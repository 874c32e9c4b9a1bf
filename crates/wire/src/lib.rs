//! Wire types shared by the server, the agent and the client: the socket.io agent
//! protocol, the REST JSON bodies and the normalized results model.
//!
//! Everything here is plain data with serde derives; no IO.

pub mod analysis;
pub mod api;
pub mod artifact;
pub mod events;
pub mod fleet;
pub mod protocol;
pub mod reason;
pub mod results;
pub mod resultsdb;
pub mod scale;
