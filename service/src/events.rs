//! Sign-in events: one JSON line per sign-in decision, for logs and SIEMs (see `ops` for
//! where the lines go, and for request events).
//!
//! `{"time":"2026-11-29T10:00:00Z","type":"sign_in","request_id":"…","app":"wiki",
//! "client":"192.0.2.7","user":"alice","decision":"allow","reason":"signed_in"}`

use std::net::IpAddr;

use serde::Serialize;

/// How a sign-in ended.
#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Decision {
    /// The user is in.
    Allow,
    /// The user is turned away (`reason` says which check failed).
    Deny,
    /// A fresh sign-in was asked for.
    Retry,
}

#[derive(Serialize)]
struct SignIn<'a> {
    time: String,
    #[serde(rename = "type")]
    kind: &'static str,
    request_id: String,
    app: &'a str,
    client: IpAddr,
    user: &'a str,
    decision: Decision,
    reason: &'a str,
}

/// Queues one sign-in event on `worker` (and counts it).
pub(crate) fn sign_in(
    worker: &crate::worker::Worker,
    request_id: &[u8; 16],
    app: &str,
    client: IpAddr,
    user: &str,
    decision: Decision,
    reason: &str,
) {
    let name = match decision {
        Decision::Allow => "allow",
        Decision::Deny => "deny",
        Decision::Retry => "retry",
    };
    let event = SignIn {
        time: rfc3339(crate::unix_now()),
        kind: "sign_in",
        request_id: gatehouse_core::hex::encode(request_id),
        app,
        client,
        user,
        decision,
        reason,
    };
    if let Ok(line) = serde_json::to_string(&event) {
        worker.ops.sign_in(name, reason, line);
    }
}

#[derive(Serialize)]
struct Enrolment<'a> {
    time: String,
    #[serde(rename = "type")]
    kind: &'static str,
    client: IpAddr,
    user: &'a str,
    connector: &'a str,
    group: &'a str,
    decision: Decision,
    reason: &'a str,
}

/// Queues one connector-enrolment event (an administrator's sign-in that registered, or
/// failed to register, a connector), counted with the sign-ins.
#[allow(clippy::too_many_arguments)]
pub(crate) fn enrolment(
    worker: &crate::worker::Worker,
    client: IpAddr,
    user: &str,
    connector: &str,
    group: &str,
    allowed: bool,
    reason: &str,
) {
    let event = Enrolment {
        time: rfc3339(crate::unix_now()),
        kind: "connector_enrolment",
        client,
        user,
        connector,
        group,
        decision: if allowed {
            Decision::Allow
        } else {
            Decision::Deny
        },
        reason,
    };
    if let Ok(line) = serde_json::to_string(&event) {
        worker
            .ops
            .sign_in(if allowed { "allow" } else { "deny" }, reason, line);
    }
}

/// `2026-11-29T10:00:00Z` for Unix seconds (UTC, proleptic Gregorian).
pub(crate) fn rfc3339(unix: u64) -> String {
    rfc3339_into(unix, &mut [0; 20]).to_owned()
}

/// [`rfc3339`] written into `buf`, without allocating (years 0 to 9999).
pub(crate) fn rfc3339_into(unix: u64, buf: &mut [u8; 20]) -> &str {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = (yoe + era * 400 + i64::from(month <= 2)).clamp(0, 9999) as u64;
    let mut put = |at: usize, value: u64, width: usize| {
        for i in 0..width {
            buf[at + width - 1 - i] = b'0' + (value / 10u64.pow(i as u32) % 10) as u8;
        }
    };
    put(0, year, 4);
    put(5, month as u64, 2);
    put(8, day as u64, 2);
    put(11, secs / 3600, 2);
    put(14, secs / 60 % 60, 2);
    put(17, secs % 60, 2);
    for (at, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'Z'),
    ] {
        buf[at] = c;
    }
    // Digits and separators only.
    std::str::from_utf8(&buf[..]).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_946_431), "2026-11-29T10:00:31Z");
    }
}
