//! Turns a user-facing server URL into the Engine.IO websocket endpoint.

use url::Url;

use crate::error::ConnectError;

/// Builds `ws[s]://host:port<path>?<query>&EIO=4&transport=websocket` from `http(s)`/`ws(s)` URLs.
///
/// The URL path must be empty or `/`: the engine path and the namespace are options, and silently
/// reinterpreting a path (as the JS client does with namespaces) hides configuration mistakes.
pub(crate) fn websocket_url(raw: &str, engine_path: &str) -> Result<Url, ConnectError> {
    let invalid = |reason: &str| ConnectError::InvalidUrl {
        url: raw.to_owned(),
        reason: reason.to_owned(),
    };
    let mut url = Url::parse(raw).map_err(|e| invalid(&e.to_string()))?;
    let scheme = match url.scheme() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        _ => return Err(invalid("scheme must be http, https, ws or wss")),
    };
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("missing host"));
    }
    if !matches!(url.path(), "" | "/") {
        return Err(invalid(
            "url must not have a path; set the namespace or engine path in ConnectOptions",
        ));
    }
    // Changing between "special" schemes (http <-> ws) is always allowed by the url crate.
    url.set_scheme(scheme)
        .map_err(|()| invalid("cannot switch to websocket scheme"))?;
    url.set_path(engine_path);
    url.set_fragment(None);
    url.query_pairs_mut()
        .append_pair("EIO", "4")
        .append_pair("transport", "websocket");
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_http_and_keeps_query() {
        let url = websocket_url("http://127.0.0.1:3000", "/socket.io/").unwrap();
        assert_eq!(
            url.as_str(),
            "ws://127.0.0.1:3000/socket.io/?EIO=4&transport=websocket"
        );
        let url = websocket_url("ws://h:1/?token=a", "/custom/").unwrap();
        assert_eq!(
            url.as_str(),
            "ws://h:1/custom/?token=a&EIO=4&transport=websocket"
        );
    }

    #[test]
    fn rejects_bad_urls() {
        assert_eq!(
            websocket_url("https://h", "/socket.io/").unwrap().as_str(),
            "wss://h/socket.io/?EIO=4&transport=websocket"
        );
        assert!(matches!(
            websocket_url("ftp://h", "/socket.io/"),
            Err(ConnectError::InvalidUrl { .. })
        ));
        assert!(matches!(
            websocket_url("http://h/admin", "/socket.io/"),
            Err(ConnectError::InvalidUrl { .. })
        ));
        assert!(websocket_url("not a url", "/").is_err());
    }
}
