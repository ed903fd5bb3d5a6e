//! The administrator's token policy: who may hold tokens and for how long.
//!
//! The policy is a value ([`Policy`]); the live one sits in a [`PolicySnapshot`]
//! that requests read without a lock and an administrator's change replaces
//! atomically, so the very next request sees it. This module never caches a
//! policy decision: it is evaluated again on every request.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;

use crate::store::User;

/// The longest finite lifetime a policy may grant: 100 years.
pub const MAX_LIFETIME: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// How long a token lives: a duration, or never expiring.
///
/// Written `"never"` or a whole number of seconds, minutes, hours or days:
/// `"90s"`, `"15m"`, `"12h"`, `"30d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lifetime {
    /// The token never expires.
    Never,
    /// The token expires this long after it was issued.
    Duration(Duration),
}

impl Lifetime {
    /// `n` days.
    pub const fn days(n: u64) -> Self {
        Self::Duration(Duration::from_secs(n * 24 * 60 * 60))
    }

    /// The later of the two: `Never` beats any duration.
    pub fn most_generous(self, other: Self) -> Self {
        match (self, other) {
            (Self::Never, _) | (_, Self::Never) => Self::Never,
            (Self::Duration(a), Self::Duration(b)) => Self::Duration(a.max(b)),
        }
    }

    /// The lifetime in nanoseconds (`None`: never expires). The longest
    /// lifetime, 100 years, fits an `i64` three times over.
    pub(crate) fn as_nanos(self) -> Option<i64> {
        match self {
            Self::Never => None,
            Self::Duration(d) => Some(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
        }
    }

    /// When a token issued at `issued_at` expires under this lifetime (`None`:
    /// never, or beyond the calendar, which is the same for any caller).
    pub fn expiry_from(self, issued_at: OffsetDateTime) -> Option<OffsetDateTime> {
        match self {
            Self::Never => None,
            Self::Duration(d) => {
                let d = time::Duration::try_from(d).ok()?;
                issued_at.checked_add(d)
            }
        }
    }
}

/// Why a policy or lifetime was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A lifetime that is not `"never"` or `<n>s|m|h|d`.
    #[error("a lifetime is \"never\" or a whole number followed by s, m, h or d (\"30d\")")]
    LifetimeSyntax,
    /// A lifetime of zero.
    #[error("a lifetime must be longer than zero")]
    ZeroLifetime,
    /// A lifetime over [`MAX_LIFETIME`].
    #[error("a lifetime may be at most 100 years; use \"never\" for tokens that do not expire")]
    LifetimeTooLong,
    /// A mode with fields it does not take, or without those it needs.
    #[error(
        "mode \"none\" takes no other field, \"all_users\" takes \"lifetime\", \"selected\" takes \"rules\""
    )]
    Fields,
    /// `selected` with no rules.
    #[error("mode \"selected\" needs at least one rule")]
    NoRules,
    /// A rule that names neither or both of `role` and `identity_provider`.
    #[error("each rule names exactly one of \"role\" or \"identity_provider\"")]
    RuleSubject,
    /// A rule with an empty role or provider name.
    #[error("a rule's role or identity provider must not be empty")]
    EmptyName,
}

impl FromStr for Lifetime {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "never" {
            return Ok(Self::Never);
        }
        // Split off the last *character*: input may end in any Unicode scalar,
        // and slicing at a byte offset could split one (found by fuzzing).
        let mut chars = s.chars();
        let unit = chars.next_back().ok_or(PolicyError::LifetimeSyntax)?;
        let digits = chars.as_str();
        let unit_secs: u64 = match unit {
            's' => 1,
            'm' => 60,
            'h' => 60 * 60,
            'd' => 24 * 60 * 60,
            _ => return Err(PolicyError::LifetimeSyntax),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PolicyError::LifetimeSyntax);
        }
        let secs = digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(unit_secs))
            .ok_or(PolicyError::LifetimeTooLong)?;
        let duration = Duration::from_secs(secs);
        if secs == 0 {
            Err(PolicyError::ZeroLifetime)
        } else if duration > MAX_LIFETIME {
            Err(PolicyError::LifetimeTooLong)
        } else {
            Ok(Self::Duration(duration))
        }
    }
}

impl fmt::Display for Lifetime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Never => f.write_str("never"),
            Self::Duration(d) => {
                let secs = d.as_secs();
                // The largest unit that divides exactly; sub-second parts cannot be
                // written and are not produced by parsing.
                for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
                    if secs % size == 0 && secs > 0 {
                        return write!(f, "{}{unit}", secs / size);
                    }
                }
                write!(f, "{secs}s")
            }
        }
    }
}

impl Serialize for Lifetime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lifetime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Whom a `selected` rule matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    /// Users holding this role.
    Role(String),
    /// Users signed in through this identity provider.
    IdentityProvider(String),
}

/// One rule of a `selected` policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RuleRepr", into = "RuleRepr")]
pub struct Rule {
    /// Whom the rule matches.
    pub subject: Subject,
    /// The lifetime it grants.
    pub lifetime: Lifetime,
}

impl Rule {
    /// A rule for a role.
    pub fn role(role: impl Into<String>, lifetime: Lifetime) -> Self {
        Self {
            subject: Subject::Role(role.into()),
            lifetime,
        }
    }

    /// A rule for an identity provider.
    pub fn identity_provider(provider: impl Into<String>, lifetime: Lifetime) -> Self {
        Self {
            subject: Subject::IdentityProvider(provider.into()),
            lifetime,
        }
    }

    fn matches(&self, user: &User) -> bool {
        match &self.subject {
            Subject::Role(role) => user.roles.iter().any(|r| r == role),
            Subject::IdentityProvider(p) => user.identity_provider == *p,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename = "Rule")]
struct RuleRepr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identity_provider: Option<String>,
    lifetime: Lifetime,
}

impl TryFrom<RuleRepr> for Rule {
    type Error = PolicyError;

    fn try_from(r: RuleRepr) -> Result<Self, Self::Error> {
        let subject = match (r.role, r.identity_provider) {
            (Some(role), None) => Subject::Role(role),
            (None, Some(p)) => Subject::IdentityProvider(p),
            _ => return Err(PolicyError::RuleSubject),
        };
        if matches!(&subject, Subject::Role(n) | Subject::IdentityProvider(n) if n.is_empty()) {
            return Err(PolicyError::EmptyName);
        }
        Ok(Self {
            subject,
            lifetime: r.lifetime,
        })
    }
}

impl From<Rule> for RuleRepr {
    fn from(rule: Rule) -> Self {
        let (role, identity_provider) = match rule.subject {
            Subject::Role(r) => (Some(r), None),
            Subject::IdentityProvider(p) => (None, Some(p)),
        };
        Self {
            role,
            identity_provider,
            lifetime: rule.lifetime,
        }
    }
}

/// Who may generate and use tokens, and for how long.
///
/// JSON: `{"mode":"none"}`, `{"mode":"all_users","lifetime":"30d"}`,
/// `{"mode":"selected","rules":[{"role":"admin","lifetime":"90d"},
/// {"identity_provider":"saml-corp","lifetime":"never"}]}`.
///
/// ```
/// use tower_api_tokens::policy::{Lifetime, Policy};
///
/// let policy: Policy = r#"{"mode":"all_users","lifetime":"30d"}"#.parse().unwrap();
/// assert_eq!(policy, Policy::AllUsers { lifetime: Lifetime::days(30) });
/// assert!(r#"{"mode":"selected","rules":[]}"#.parse::<Policy>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PolicyRepr", into = "PolicyRepr")]
pub enum Policy {
    /// Nobody; existing tokens stop working at once.
    None,
    /// Every user, with one lifetime.
    AllUsers {
        /// The lifetime of every token.
        lifetime: Lifetime,
    },
    /// Users matching at least one rule; the most generous matching lifetime wins.
    Selected {
        /// The rules; at least one.
        rules: Vec<Rule>,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    None,
    AllUsers,
    Selected,
}

/// The JSON shape: one object, `mode` plus the fields that mode takes.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename = "Policy")]
struct PolicyRepr {
    mode: Mode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lifetime: Option<Lifetime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rules: Option<Vec<Rule>>,
}

impl TryFrom<PolicyRepr> for Policy {
    type Error = PolicyError;

    fn try_from(r: PolicyRepr) -> Result<Self, Self::Error> {
        let policy = match (r.mode, r.lifetime, r.rules) {
            (Mode::None, None, None) => Self::None,
            (Mode::AllUsers, Some(lifetime), None) => Self::AllUsers { lifetime },
            (Mode::Selected, None, Some(rules)) => Self::Selected { rules },
            _ => return Err(PolicyError::Fields),
        };
        policy.validate()?;
        Ok(policy)
    }
}

impl From<Policy> for PolicyRepr {
    fn from(p: Policy) -> Self {
        let (mode, lifetime, rules) = match p {
            Policy::None => (Mode::None, None, None),
            Policy::AllUsers { lifetime } => (Mode::AllUsers, Some(lifetime), None),
            Policy::Selected { rules } => (Mode::Selected, None, Some(rules)),
        };
        Self {
            mode,
            lifetime,
            rules,
        }
    }
}

impl Default for Policy {
    /// A fresh store's policy: every user, 90 days.
    fn default() -> Self {
        Self::AllUsers {
            lifetime: Lifetime::days(90),
        }
    }
}

impl Policy {
    /// The lifetime this policy grants `user`, or `None` if it grants none.
    pub fn lifetime_for(&self, user: &User) -> Option<Lifetime> {
        match self {
            Self::None => None,
            Self::AllUsers { lifetime } => Some(*lifetime),
            Self::Selected { rules } => rules
                .iter()
                .filter(|rule| rule.matches(user))
                .map(|rule| rule.lifetime)
                .reduce(Lifetime::most_generous),
        }
    }

    /// Checks what serde cannot: `selected` has rules, lifetimes are in range.
    /// Deserialization already calls this.
    ///
    /// # Errors
    ///
    /// The first [`PolicyError`] found.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let check = |l: &Lifetime| match l {
            Lifetime::Duration(d) if d.is_zero() => Err(PolicyError::ZeroLifetime),
            Lifetime::Duration(d) if *d > MAX_LIFETIME => Err(PolicyError::LifetimeTooLong),
            _ => Ok(()),
        };
        match self {
            Self::None => Ok(()),
            Self::AllUsers { lifetime } => check(lifetime),
            Self::Selected { rules } if rules.is_empty() => Err(PolicyError::NoRules),
            Self::Selected { rules } => rules.iter().try_for_each(|r| {
                match &r.subject {
                    Subject::Role(n) | Subject::IdentityProvider(n) if n.is_empty() => {
                        return Err(PolicyError::EmptyName);
                    }
                    _ => {}
                }
                check(&r.lifetime)
            }),
        }
    }
}

/// Parse error of a policy document.
#[derive(Debug, thiserror::Error)]
#[error("invalid token policy: {0}")]
pub struct PolicyParseError(String);

impl FromStr for Policy {
    type Err = PolicyParseError;

    /// Parses and validates the JSON form.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let policy: Policy =
            serde_json::from_str(s).map_err(|e| PolicyParseError(e.to_string()))?;
        policy
            .validate()
            .map_err(|e| PolicyParseError(e.to_string()))?;
        Ok(policy)
    }
}

/// A policy with the version the store gave it. Versions only grow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionedPolicy {
    /// The policy.
    pub policy: Policy,
    /// Its version: 0 for the built-in default, then 1, 2, … per change.
    pub version: u64,
}

/// The live policy, shared by the layer and the manager; read without a lock.
#[derive(Clone)]
pub struct PolicySnapshot {
    current: Arc<ArcSwap<VersionedPolicy>>,
}

impl PolicySnapshot {
    /// A snapshot holding `initial`.
    pub fn new(initial: VersionedPolicy) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(initial)),
        }
    }

    /// The policy in force now.
    pub fn load(&self) -> arc_swap::Guard<Arc<VersionedPolicy>> {
        self.current.load()
    }

    /// Replaces the policy unless the snapshot already holds a newer version
    /// (notifications may arrive out of order). Returns whether it was replaced.
    pub fn replace(&self, next: VersionedPolicy) -> bool {
        let next = Arc::new(next);
        let prev = self.current.rcu(|cur| {
            if cur.version > next.version {
                Arc::clone(cur)
            } else {
                Arc::clone(&next)
            }
        });
        prev.version <= next.version
    }
}

impl fmt::Debug for PolicySnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PolicySnapshot")
            .field(&**self.load())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::UserId;

    fn user(roles: &[&str], provider: &str) -> User {
        User {
            id: UserId::new(),
            username: "u".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            identity_provider: provider.into(),
        }
    }

    #[test]
    fn lifetimes_parse_in_every_unit() {
        assert_eq!(
            "90s".parse(),
            Ok(Lifetime::Duration(Duration::from_secs(90)))
        );
        assert_eq!(
            "15m".parse(),
            Ok(Lifetime::Duration(Duration::from_secs(900)))
        );
        assert_eq!(
            "12h".parse(),
            Ok(Lifetime::Duration(Duration::from_secs(43_200)))
        );
        assert_eq!(
            "30d".parse(),
            Ok(Lifetime::Duration(Duration::from_secs(2_592_000)))
        );
        assert_eq!("never".parse(), Ok(Lifetime::Never));
    }

    #[test]
    fn bad_lifetimes_are_refused() {
        // "3Ж" and "Ж" end in a multi-byte character (a fuzzing find: it used
        // to panic on a byte slice).
        for s in [
            "", "d", "30", "30w", "-1d", "1.5d", " 30d", "Never", "+3d", "3Ж", "Ж", "dЖ",
        ] {
            assert_eq!(
                s.parse::<Lifetime>(),
                Err(PolicyError::LifetimeSyntax),
                "{s:?}"
            );
        }
        assert_eq!("0d".parse::<Lifetime>(), Err(PolicyError::ZeroLifetime));
        assert_eq!(
            "36501d".parse::<Lifetime>(),
            Err(PolicyError::LifetimeTooLong)
        );
        assert_eq!(
            "99999999999999999999d".parse::<Lifetime>(),
            Err(PolicyError::LifetimeTooLong)
        );
    }

    #[test]
    fn lifetimes_print_in_the_largest_exact_unit() {
        assert_eq!(Lifetime::days(30).to_string(), "30d");
        assert_eq!(
            Lifetime::Duration(Duration::from_secs(7200)).to_string(),
            "2h"
        );
        assert_eq!(
            Lifetime::Duration(Duration::from_secs(90)).to_string(),
            "90s"
        );
        assert_eq!(Lifetime::Never.to_string(), "never");
    }

    #[test]
    fn design_json_forms_parse() {
        assert_eq!(
            "{\"mode\":\"none\"}".parse::<Policy>().unwrap(),
            Policy::None
        );
        let selected: Policy = r#"{"mode":"selected","rules":[{"role":"admin","lifetime":"90d"},{"identity_provider":"saml-corp","lifetime":"never"}]}"#
            .parse()
            .unwrap();
        assert_eq!(
            selected,
            Policy::Selected {
                rules: vec![
                    Rule::role("admin", Lifetime::days(90)),
                    Rule::identity_provider("saml-corp", Lifetime::Never)
                ]
            }
        );
        let json = serde_json::to_string(&selected).unwrap();
        assert_eq!(
            json,
            r#"{"mode":"selected","rules":[{"role":"admin","lifetime":"90d"},{"identity_provider":"saml-corp","lifetime":"never"}]}"#
        );
    }

    #[test]
    fn malformed_policies_are_refused() {
        for bad in [
            r#"{"mode":"everyone"}"#,
            r#"{"mode":"all_users"}"#,
            r#"{"mode":"all_users","lifetime":"30d","extra":1}"#,
            r#"{"mode":"all_users","lifetime":"0d"}"#,
            r#"{"mode":"selected","rules":[]}"#,
            r#"{"mode":"selected","rules":[{"lifetime":"1d"}]}"#,
            r#"{"mode":"selected","rules":[{"role":"a","identity_provider":"b","lifetime":"1d"}]}"#,
            r#"{"mode":"selected","rules":[{"role":"","lifetime":"1d"}]}"#,
            r#"{"mode":"selected","rules":[{"role":"a","lifetime":"1d","x":0}]}"#,
            r#"{"mode":"none","lifetime":"1d"}"#,
            r#"{"mode":"all_users","lifetime":"1d","rules":[]}"#,
            r#"{"mode":"selected","lifetime":"1d","rules":[{"role":"a","lifetime":"1d"}]}"#,
            r#"{"lifetime":"1d"}"#,
            r#"[]"#,
        ] {
            assert!(bad.parse::<Policy>().is_err(), "{bad}");
        }
    }

    #[test]
    fn fresh_default_is_all_users_90_days() {
        assert_eq!(
            Policy::default(),
            Policy::AllUsers {
                lifetime: Lifetime::days(90)
            }
        );
    }

    #[test]
    fn most_generous_matching_rule_wins() {
        let policy = Policy::Selected {
            rules: vec![
                Rule::role("dev", Lifetime::days(7)),
                Rule::role("ops", Lifetime::days(30)),
                Rule::identity_provider("saml", Lifetime::Never),
            ],
        };
        assert_eq!(
            policy.lifetime_for(&user(&["dev"], "local")),
            Some(Lifetime::days(7))
        );
        assert_eq!(
            policy.lifetime_for(&user(&["dev", "ops"], "local")),
            Some(Lifetime::days(30))
        );
        assert_eq!(
            policy.lifetime_for(&user(&["dev"], "saml")),
            Some(Lifetime::Never)
        );
        assert_eq!(policy.lifetime_for(&user(&["guest"], "local")), None);
        assert_eq!(Policy::None.lifetime_for(&user(&["dev"], "saml")), None);
    }

    #[test]
    fn snapshot_ignores_older_versions() {
        let snap = PolicySnapshot::new(VersionedPolicy {
            policy: Policy::default(),
            version: 3,
        });
        assert!(!snap.replace(VersionedPolicy {
            policy: Policy::None,
            version: 2
        }));
        assert_eq!(snap.load().policy, Policy::default());
        assert!(snap.replace(VersionedPolicy {
            policy: Policy::None,
            version: 4
        }));
        assert_eq!(snap.load().policy, Policy::None);
    }
}
