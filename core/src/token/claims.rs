//! The claims of a verified ID token, typed.

use serde_json::{Map, Value};

use super::TokenError;

/// The claims Gatehouse uses, read from a verified token.
///
/// Required: `iss`, `sub`, `aud`, `exp`, `iat` (OpenID Connect Core 2). Everything else is
/// optional; claims not listed here stay in [`extra`](Self::extra).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Subject: the provider's stable user identifier.
    pub sub: String,
    /// Audiences (a single string in the token becomes one element).
    pub aud: Vec<String>,
    /// Authorized party.
    pub azp: Option<String>,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Not before, Unix seconds.
    pub nbf: Option<u64>,
    /// When the user authenticated, Unix seconds.
    pub auth_time: Option<u64>,
    /// The nonce of the authorization request.
    pub nonce: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
    /// Whether the provider verified the e-mail address.
    pub email_verified: Option<bool>,
    /// Full name.
    pub name: Option<String>,
    /// Preferred user name.
    pub preferred_username: Option<String>,
    /// Group names, from the configured groups claim.
    pub groups: Vec<String>,
    /// Role names (`roles`).
    pub roles: Vec<String>,
    /// Authentication methods references (`amr`).
    pub amr: Vec<String>,
    /// Authentication context class reference (`acr`).
    pub acr: Option<String>,
    /// The provider left groups out because there were too many (Entra ID "groups overage":
    /// `_claim_names` has `groups`, or `hasgroups` is true). Groups must then be fetched from
    /// the provider's API; [`groups`](Self::groups) is incomplete.
    pub groups_overage: bool,
    /// Every other claim.
    pub extra: Map<String, Value>,
}

impl Claims {
    /// Reads the claims of a verified payload; groups come from the claim named `groups_claim`.
    pub(crate) fn from_json(payload: &[u8], groups_claim: &str) -> Result<Self, TokenError> {
        let map: Map<String, Value> =
            serde_json::from_slice(payload).map_err(|_| TokenError::Json)?;
        Self::from_map(map, groups_claim)
    }

    fn from_map(mut m: Map<String, Value>, groups_claim: &str) -> Result<Self, TokenError> {
        let groups_overage = overage(&m);
        Ok(Claims {
            iss: required(string(&mut m, "iss")?, "iss")?,
            sub: required(string(&mut m, "sub")?, "sub")?,
            aud: required(audience(&mut m)?, "aud")?,
            azp: string(&mut m, "azp")?,
            exp: required(date(&mut m, "exp")?, "exp")?,
            iat: required(date(&mut m, "iat")?, "iat")?,
            nbf: date(&mut m, "nbf")?,
            auth_time: date(&mut m, "auth_time")?,
            nonce: string(&mut m, "nonce")?,
            email: string(&mut m, "email")?,
            email_verified: boolean(&mut m, "email_verified")?,
            name: string(&mut m, "name")?,
            preferred_username: string(&mut m, "preferred_username")?,
            groups: list(m.remove(groups_claim), "groups")?,
            roles: list(m.remove("roles"), "roles")?,
            amr: list(m.remove("amr"), "amr")?,
            acr: string(&mut m, "acr")?,
            groups_overage,
            extra: m,
        })
    }
}

fn required<T>(value: Option<T>, claim: &'static str) -> Result<T, TokenError> {
    value.ok_or(TokenError::MissingClaim(claim))
}

/// A string claim; JSON `null` counts as absent.
fn string(m: &mut Map<String, Value>, claim: &'static str) -> Result<Option<String>, TokenError> {
    match m.remove(claim) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(TokenError::InvalidClaim(claim)),
    }
}

fn boolean(m: &mut Map<String, Value>, claim: &'static str) -> Result<Option<bool>, TokenError> {
    match m.remove(claim) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(b)),
        Some(_) => Err(TokenError::InvalidClaim(claim)),
    }
}

/// A NumericDate (RFC 7519 2): seconds, possibly fractional; fractions are dropped.
fn date(m: &mut Map<String, Value>, claim: &'static str) -> Result<Option<u64>, TokenError> {
    match m.remove(claim) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let secs = n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .map(|f| f as u64)
            });
            secs.map(Some).ok_or(TokenError::InvalidClaim(claim))
        }
        Some(_) => Err(TokenError::InvalidClaim(claim)),
    }
}

/// `aud`: a string or an array of strings (RFC 7519 4.1.3).
fn audience(m: &mut Map<String, Value>) -> Result<Option<Vec<String>>, TokenError> {
    match m.remove("aud") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s])),
        Some(v @ Value::Array(_)) => {
            let aud = list(Some(v), "aud")?;
            if aud.is_empty() {
                return Err(TokenError::InvalidClaim("aud"));
            }
            Ok(Some(aud))
        }
        Some(_) => Err(TokenError::InvalidClaim("aud")),
    }
}

/// An array of strings; a lone string is taken as a one-element array, absence as empty.
fn list(value: Option<Value>, claim: &'static str) -> Result<Vec<String>, TokenError> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s]),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s),
                _ => Err(TokenError::InvalidClaim(claim)),
            })
            .collect(),
        Some(_) => Err(TokenError::InvalidClaim(claim)),
    }
}

/// Entra ID omits `groups` past 200 (150 for SAML) and points to the Graph API instead, through
/// `_claim_names.groups`, or sets `hasgroups` in the implicit flow.
fn overage(m: &Map<String, Value>) -> bool {
    let named = m
        .get("_claim_names")
        .and_then(Value::as_object)
        .is_some_and(|names| names.contains_key("groups"));
    named || m.get("hasgroups").and_then(Value::as_bool).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claims(v: Value) -> Result<Claims, TokenError> {
        Claims::from_json(v.to_string().as_bytes(), "groups")
    }

    fn minimal() -> Value {
        json!({"iss": "https://idp", "sub": "u1", "aud": "client", "exp": 2000, "iat": 1000})
    }

    #[test]
    fn reads_a_full_token() {
        let c = claims(json!({
            "iss": "https://idp", "sub": "u1", "aud": ["client", "other"], "azp": "client",
            "exp": 2000.7, "iat": 1000, "nbf": 999, "auth_time": 998, "nonce": "n",
            "email": "a@b", "email_verified": true, "name": "A B", "preferred_username": "ab",
            "groups": ["g1", "g2"], "roles": "admin", "amr": ["pwd", "mfa"], "acr": "1",
            "custom": 5
        }))
        .expect("valid");
        assert_eq!(c.aud, ["client", "other"]);
        assert_eq!(c.exp, 2000);
        assert_eq!(c.nbf, Some(999));
        assert_eq!(c.groups, ["g1", "g2"]);
        assert_eq!(c.roles, ["admin"]);
        assert_eq!(c.amr, ["pwd", "mfa"]);
        assert_eq!(c.email_verified, Some(true));
        assert!(!c.groups_overage);
        assert_eq!(c.extra.get("custom"), Some(&json!(5)));
        assert!(c.extra.get("iss").is_none());
    }

    #[test]
    fn required_claims() {
        for claim in ["iss", "sub", "aud", "exp", "iat"] {
            let mut v = minimal();
            v.as_object_mut().expect("object").remove(claim);
            assert_eq!(
                claims(v).err(),
                Some(TokenError::MissingClaim(claim)),
                "{claim}"
            );
        }
        assert!(claims(minimal()).is_ok());
    }

    #[test]
    fn wrong_types() {
        let cases = [
            ("exp", json!("2000")),
            ("exp", json!(-1)),
            ("iat", json!(true)),
            ("aud", json!(5)),
            ("aud", json!([])),
            ("aud", json!(["client", 5])),
            ("sub", json!(["u1"])),
            ("email_verified", json!("yes")),
            ("groups", json!([1, 2])),
            ("groups", json!({"a": 1})),
        ];
        for (claim, value) in cases {
            let mut v = minimal();
            v.as_object_mut()
                .expect("object")
                .insert(claim.to_owned(), value);
            assert_eq!(
                claims(v).err(),
                Some(TokenError::InvalidClaim(claim)),
                "{claim}"
            );
        }
        assert_eq!(
            Claims::from_json(b"[1,2]", "groups").err(),
            Some(TokenError::Json),
            "claims must be an object"
        );
    }

    #[test]
    fn custom_groups_claim_and_overage() {
        let mut v = minimal();
        let o = v.as_object_mut().expect("object");
        o.insert("cognito:groups".to_owned(), json!(["x"]));
        o.insert("_claim_names".to_owned(), json!({"groups": "src1"}));
        let c = Claims::from_json(v.to_string().as_bytes(), "cognito:groups").expect("valid");
        assert_eq!(c.groups, ["x"]);
        assert!(c.groups_overage);

        let mut v = minimal();
        v.as_object_mut()
            .expect("object")
            .insert("hasgroups".to_owned(), json!(true));
        assert!(claims(v).expect("valid").groups_overage);
    }
}
