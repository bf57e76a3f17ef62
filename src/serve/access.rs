//! Who may talk to the server, before any key or model work: a local server must not be
//! reachable by every web page its user visits.
//!
//! - **Origins** (CORS, and the `Origin` header browsers put on every cross-site request, simple
//!   POSTs included): loopback origins (`http(s)://localhost`, `*.localhost`, `127.0.0.0/8`,
//!   `[::1]`, any port) and those given with `--cors-origin` (`*`: any). A request from another
//!   origin is refused with 403, so a page cannot drive the server even where CORS would only
//!   hide the answer from it.
//! - **Hosts** (DNS rebinding: a page on a name the attacker resolves to 127.0.0.1 is
//!   same-origin with the server, so the `Host` header is the only thing that tells): loopback
//!   names, IP addresses (a rebinding attack needs a name) and names given with
//!   `--allowed-host` (`*`: any). Vite's dev server and Jupyter check the same way.

use std::net::IpAddr;

/// `origin` (`scheme://host[:port]`, as browsers send it) may call the server.
pub fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    let origin = origin.trim();
    if allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    rest.is_some_and(|hostport| !hostport.contains('/') && is_loopback(host_of(hostport)))
}

/// A request whose `Host` header is `host` (`name[:port]`) may be served.
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = host_of(host.trim());
    if allowed
        .iter()
        .any(|a| a == "*" || a.eq_ignore_ascii_case(name))
    {
        return true;
    }
    is_loopback(name) || ip(name).is_some()
}

/// The host of `host[:port]` (`[v6]` keeps its brackets).
fn host_of(hostport: &str) -> &str {
    if hostport.starts_with('[') {
        return match hostport.find(']') {
            Some(end) => &hostport[..=end],
            None => hostport,
        };
    }
    match hostport.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => hostport,
    }
}

/// An IP literal (`1.2.3.4`, `[::1]`).
fn ip(name: &str) -> Option<IpAddr> {
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    bare.parse().ok()
}

fn is_loopback(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower == "localhost"
        || lower.ends_with(".localhost")
        || ip(name).is_some_and(|a| a.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_origins_pass_and_others_need_to_be_named() {
        let none: Vec<String> = Vec::new();
        for ok in [
            "http://localhost",
            "http://localhost:5173",
            "https://127.0.0.1:8080",
            "http://[::1]:3000",
            "http://app.localhost:80",
            "http://127.0.0.2",
        ] {
            assert!(origin_allowed(ok, &none), "{ok}");
        }
        for bad in [
            "http://example.com",
            "https://evil.example:8080",
            "http://localhost.evil.com",
            "http://127.0.0.1.nip.io",
            "null",
            "file://",
            "http://localhost/path",
        ] {
            assert!(!origin_allowed(bad, &none), "{bad}");
        }
        let named = vec!["https://app.example.com/".to_string()];
        assert!(origin_allowed("https://app.example.com", &named));
        assert!(!origin_allowed("https://other.example.com", &named));
        assert!(origin_allowed("https://anything.test", &["*".to_string()]));
    }

    #[test]
    fn hosts_must_be_loopback_an_address_or_named() {
        let none: Vec<String> = Vec::new();
        for ok in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "192.168.1.20:8080",
            "10.0.0.5",
            "[fe80::1]",
        ] {
            assert!(host_allowed(ok, &none), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "x",
            "127.0.0.1.nip.io:80",
        ] {
            assert!(!host_allowed(bad, &none), "{bad}");
        }
        let named = vec!["flint.internal".to_string()];
        assert!(host_allowed("flint.internal:8080", &named));
        assert!(host_allowed("anything", &["*".to_string()]));
    }
}
