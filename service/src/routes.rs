//! Which application a request is for: by host (exact, then wildcard) and path prefix.

use crate::config::{App, HostPattern};

/// Finds the app for `host` (the Host field, port removed, any case) and `target`: the
/// longest matching path prefix among the apps of that host.
pub(crate) fn find<'a>(apps: &'a [App], host: &[u8], target: &[u8]) -> Option<&'a App> {
    let host = host_without_port(host);
    let host = std::str::from_utf8(host).ok()?;
    let path = match target.iter().position(|&b| b == b'?') {
        Some(q) => &target[..q],
        None => target,
    };
    let mut best: Option<&App> = None;
    for exact in [true, false] {
        for app in apps {
            let kind_matches = matches!(app.external.host, HostPattern::Exact(_)) == exact;
            if !kind_matches || app.external.host.matches(host).is_none() {
                continue;
            }
            if !prefix_matches(path, app.external.path_prefix.as_bytes()) {
                continue;
            }
            if best.is_none_or(|b| app.external.path_prefix.len() > b.external.path_prefix.len()) {
                best = Some(app);
            }
        }
        if best.is_some() {
            return best;
        }
    }
    None
}

/// Whether `path` is under `prefix` (which ends with `/`); `/wiki` is under `/wiki/` too.
fn prefix_matches(path: &[u8], prefix: &[u8]) -> bool {
    path.starts_with(prefix) || (path.len() + 1 == prefix.len() && prefix.starts_with(path))
}

/// `host:port` → `host`, `[::1]:443` → `::1`.
pub(crate) fn host_without_port(host: &[u8]) -> &[u8] {
    if let Some(rest) = host.strip_prefix(b"[") {
        return match rest.iter().position(|&b| b == b']') {
            Some(end) => &rest[..end],
            None => host,
        };
    }
    match host.iter().rposition(|&b| b == b':') {
        Some(colon) => &host[..colon],
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_is_removed() {
        assert_eq!(
            host_without_port(b"wiki.example.com:8443"),
            b"wiki.example.com"
        );
        assert_eq!(host_without_port(b"wiki.example.com"), b"wiki.example.com");
        assert_eq!(host_without_port(b"[::1]:443"), b"::1");
    }

    #[test]
    fn prefixes() {
        assert!(prefix_matches(b"/wiki/page", b"/wiki/"));
        assert!(prefix_matches(b"/wiki", b"/wiki/"));
        assert!(!prefix_matches(b"/wikix", b"/wiki/"));
        assert!(prefix_matches(b"/anything", b"/"));
    }
}
