//! Conditional access: whether a signed-in user may use an app, and if not, which check
//! failed. Pure code: the facts come in, a decision comes out.

use std::net::{IpAddr, SocketAddr};

use crate::config::{Access, IpNet};

/// Why a user is turned away. Each names one check, for the page and the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    /// The client address is outside the app's networks.
    Network,
    /// The user, or one of their groups, is on the app's deny list.
    DenyListed,
    /// The provider left groups out of the token (too many), and the policy needs them.
    GroupOverage,
    /// Neither the user nor any of their groups is assigned to the app.
    NotAssigned,
    /// The app requires multi-factor sign-in and this one used a single factor.
    MfaRequired,
    /// The sign-in is older than the app allows.
    SignInTooOld,
}

impl Denial {
    /// The status, title and explanation of the page.
    pub fn page(self) -> (u16, &'static str, &'static str) {
        match self {
            Denial::Network => (
                403,
                "Network not allowed",
                "This application cannot be used from your current network location.",
            ),
            Denial::DenyListed => (
                403,
                "Access denied",
                "Your account is not allowed to use this application.",
            ),
            Denial::GroupOverage => (
                403,
                "Too many groups to check",
                "Your identity provider left your group memberships out of the sign-in token \
                 because there were too many (group overage), so group assignment cannot be \
                 checked. Ask your administrator to assign you directly or to limit the groups \
                 sent to this application.",
            ),
            Denial::NotAssigned => (
                403,
                "Not assigned to this application",
                "You signed in, but your account is not assigned to this application. Ask your \
                 administrator for access.",
            ),
            Denial::MfaRequired => (
                403,
                "Multi-factor authentication required",
                "This application requires a sign-in with more than one factor. Sign out and \
                 sign in again with multi-factor authentication.",
            ),
            Denial::SignInTooOld => (
                401,
                "Sign-in too old",
                "This application requires a recent sign-in, and your identity provider did \
                 not sign you in again. Sign out and sign in again.",
            ),
        }
    }

    /// A short machine-readable reason for events and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Denial::Network => "network_not_allowed",
            Denial::DenyListed => "deny_listed",
            Denial::GroupOverage => "group_overage",
            Denial::NotAssigned => "not_assigned",
            Denial::MfaRequired => "mfa_required",
            Denial::SignInTooOld => "sign_in_too_old",
        }
    }
}

/// What the policy looks at about a user.
pub struct Facts<'a, G> {
    /// The provider's subject.
    pub subject: &'a str,
    /// The user name.
    pub user_name: &'a str,
    /// The e-mail address, or "".
    pub email: &'a str,
    /// Whether the user is in a group.
    pub in_group: G,
    /// The provider left groups out (too many).
    pub groups_overage: bool,
    /// The sign-in used more than one factor.
    pub mfa: bool,
    /// When the user signed in, Unix seconds.
    pub auth_time: u64,
}

/// Checks `facts` from `client` against `access` at `now`. Order: network, deny lists,
/// assignment, MFA, sign-in age (the first failure is the one the user can act on least,
/// so it is not hidden behind one they could fix).
pub fn check<G: Fn(&str) -> bool>(
    access: &Access,
    facts: &Facts<'_, G>,
    client: IpAddr,
    now: u64,
) -> Result<(), Denial> {
    if !access.networks.is_empty() && !access.networks.iter().any(|n| n.contains(client)) {
        return Err(Denial::Network);
    }
    let names_user = |list: &[String]| {
        list.iter().any(|u| {
            u == facts.subject
                || u.eq_ignore_ascii_case(facts.user_name)
                || (!facts.email.is_empty() && u.eq_ignore_ascii_case(facts.email))
        })
    };
    if names_user(&access.deny_users) || access.deny_groups.iter().any(|g| (facts.in_group)(g)) {
        return Err(Denial::DenyListed);
    }
    if !access.deny_groups.is_empty() && facts.groups_overage {
        return Err(Denial::GroupOverage);
    }
    let open_to_all = access.users.is_empty() && access.groups.is_empty();
    if !open_to_all
        && !names_user(&access.users)
        && !access.groups.iter().any(|g| (facts.in_group)(g))
    {
        return Err(if facts.groups_overage && !access.groups.is_empty() {
            Denial::GroupOverage
        } else {
            Denial::NotAssigned
        });
    }
    if access.require_mfa && !facts.mfa {
        return Err(Denial::MfaRequired);
    }
    if let Some(age) = access.max_signin_age {
        if now.saturating_sub(facts.auth_time) > age.as_secs() {
            return Err(Denial::SignInTooOld);
        }
    }
    Ok(())
}

/// The client's address for network rules: the socket peer, or, when the peer is a trusted
/// proxy, the right-most address in X-Forwarded-For that is not itself a trusted proxy
/// (entries further left were written by the client and prove nothing).
pub fn client_ip<'v>(
    peer: SocketAddr,
    trusted: &[IpNet],
    forwarded_for: impl Iterator<Item = &'v [u8]>,
) -> IpAddr {
    let peer_ip = peer.ip();
    if !trusted.iter().any(|n| n.contains(peer_ip)) {
        return peer_ip;
    }
    let mut client = peer_ip;
    // Later fields append to earlier ones (RFC 9110 5.3): walk all entries right to left.
    let mut entries: [&[u8]; 32] = [&[]; 32];
    let mut count = 0;
    for value in forwarded_for {
        for entry in value.split(|&b| b == b',') {
            if count == entries.len() {
                entries.copy_within(1.., 0);
                count -= 1;
            }
            entries[count] = entry;
            count += 1;
        }
    }
    for entry in entries[..count].iter().rev() {
        let text = std::str::from_utf8(entry).unwrap_or("").trim();
        let Ok(ip) = text.parse::<IpAddr>() else {
            // Garbage where an address should be: trust nothing further left.
            break;
        };
        client = ip;
        if !trusted.iter().any(|n| n.contains(ip)) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn facts<'a>(
        user: &'a str,
        groups: &'a [&'a str],
        mfa: bool,
    ) -> Facts<'a, impl Fn(&str) -> bool + 'a> {
        Facts {
            subject: "sub-1",
            user_name: user,
            email: "alice@example.com",
            in_group: move |g: &str| groups.contains(&g),
            groups_overage: false,
            mfa,
            auth_time: 1_000,
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn assignment_by_user_email_subject_or_group() {
        let access = Access {
            users: vec!["bob".into()],
            groups: vec!["staff".into()],
            ..Access::default()
        };
        let here = ip("10.0.0.1");
        assert_eq!(
            check(&access, &facts("bob", &[], false), here, 1_000),
            Ok(())
        );
        assert_eq!(
            check(&access, &facts("alice", &["staff"], false), here, 1_000),
            Ok(())
        );
        assert_eq!(
            check(&access, &facts("alice", &["sales"], false), here, 1_000),
            Err(Denial::NotAssigned)
        );
        let by_email = Access {
            users: vec!["ALICE@example.com".into()],
            ..Access::default()
        };
        assert_eq!(
            check(&by_email, &facts("alice", &[], false), here, 1_000),
            Ok(())
        );
        // Nobody named: every signed-in user is assigned.
        assert_eq!(
            check(&Access::default(), &facts("x", &[], false), here, 1_000),
            Ok(())
        );
    }

    #[test]
    fn deny_lists_win_over_assignment() {
        let access = Access {
            groups: vec!["staff".into()],
            deny_groups: vec!["contractors".into()],
            deny_users: vec!["mallory".into()],
            ..Access::default()
        };
        let here = ip("10.0.0.1");
        assert_eq!(
            check(
                &access,
                &facts("alice", &["staff", "contractors"], false),
                here,
                1_000
            ),
            Err(Denial::DenyListed)
        );
        assert_eq!(
            check(&access, &facts("mallory", &["staff"], false), here, 1_000),
            Err(Denial::DenyListed)
        );
    }

    #[test]
    fn overage_is_named_instead_of_a_silent_denial() {
        let access = Access {
            groups: vec!["staff".into()],
            ..Access::default()
        };
        let mut f = facts("alice", &[], false);
        f.groups_overage = true;
        assert_eq!(
            check(&access, &f, ip("10.0.0.1"), 1_000),
            Err(Denial::GroupOverage)
        );
    }

    #[test]
    fn network_mfa_and_age() {
        let access = Access {
            networks: vec![crate::config::IpNet {
                addr: ip("10.0.0.0"),
                prefix: 8,
            }],
            require_mfa: true,
            max_signin_age: Some(Duration::from_secs(60)),
            ..Access::default()
        };
        assert_eq!(
            check(&access, &facts("a", &[], true), ip("192.0.2.1"), 1_000),
            Err(Denial::Network)
        );
        assert_eq!(
            check(&access, &facts("a", &[], false), ip("10.1.1.1"), 1_000),
            Err(Denial::MfaRequired)
        );
        assert_eq!(
            check(&access, &facts("a", &[], true), ip("10.1.1.1"), 1_060),
            Ok(())
        );
        assert_eq!(
            check(&access, &facts("a", &[], true), ip("10.1.1.1"), 1_061),
            Err(Denial::SignInTooOld)
        );
    }

    #[test]
    fn forwarded_for_counts_only_behind_trusted_proxies() {
        let trusted = [crate::config::IpNet {
            addr: ip("10.0.0.0"),
            prefix: 8,
        }];
        let peer = |a: &str| SocketAddr::new(ip(a), 1234);
        let xff = |v: &'static str| std::iter::once(v.as_bytes());
        // Not from a trusted proxy: the header is the client's own claim.
        assert_eq!(
            client_ip(peer("192.0.2.9"), &trusted, xff("10.1.1.1")),
            ip("192.0.2.9")
        );
        // From a trusted proxy: the right-most untrusted entry.
        assert_eq!(
            client_ip(
                peer("10.0.0.2"),
                &trusted,
                xff("6.6.6.6, 198.51.100.7, 10.0.0.3")
            ),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_ip(peer("10.0.0.2"), &trusted, std::iter::empty()),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_ip(peer("10.0.0.2"), &trusted, xff("junk, 198.51.100.7")),
            ip("198.51.100.7")
        );
    }
}
