//! The socket.io handles of connected agents, by host. The scheduler keeps
//! plain data about agents; sending to one goes through this map.
//!
//! A plain mutex: it is held only to look up, insert or remove a handle,
//! never across an await, so it may be taken under the scheduler lock.

use std::collections::HashMap;
use std::sync::Mutex;

use socketioxide::extract::SocketRef;

/// Each connected agent's socket, with the connection it belongs to.
#[derive(Default)]
pub(crate) struct Sockets(Mutex<HashMap<String, (u64, SocketRef)>>);

impl Sockets {
    /// Registers `host`'s socket of `connection`; returns the socket of an
    /// older connection it replaces.
    pub fn insert(&self, host: &str, connection: u64, socket: SocketRef) -> Option<SocketRef> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host.to_owned(), (connection, socket))
            .map(|(_, old)| old)
    }

    /// Forgets `host`'s socket if it still belongs to `connection` (a
    /// replaced connection's end leaves its successor alone).
    pub fn remove(&self, host: &str, connection: u64) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(host).is_some_and(|(c, _)| *c == connection) {
            map.remove(host);
        }
    }

    /// `host`'s socket, when it is connected.
    pub fn get(&self, host: &str) -> Option<SocketRef> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(host)
            .map(|(_, socket)| socket.clone())
    }
}
