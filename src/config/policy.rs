//! `auth.rewrite`, `register.policy` and `invite.policy`: what the client-server
//! interceptions (login, registration, 3PID invites) may rewrite or refuse. Keys and
//! defaults follow ma1sd, except where ma1sd refused everything by accident: an empty
//! `invite.policy.ifSender.hasRole` restricts nobody, and without a `register` section
//! registration is not restricted at all.

use super::reader::Section;
use crate::model::Medium;
use regex::Regex;

/// `auth.rewrite.user.rules[]`: a login name `regex` matches whole is taken as a 3PID of
/// `medium` and logged in as the user it is bound to.
#[derive(Debug, Clone)]
pub struct RewriteRule {
    pub regex: Regex,
    pub medium: Medium,
}

/// `auth`: the login interception.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    pub rewrite: Vec<RewriteRule>,
}

/// Allow and deny regexes of one medium (`register.policy.threepid.<medium>.pattern`).
#[derive(Debug, Clone, Default)]
pub struct Patterns {
    pub whitelist: Vec<Regex>,
    pub blacklist: Vec<Regex>,
}

/// `register.policy`.
#[derive(Debug, Clone)]
pub struct RegisterPolicy {
    /// `allowed`: an address no list or invite speaks for may register.
    pub allowed: bool,
    /// `invite`: an address with a pending 3PID invite may register.
    pub invite: bool,
    pub email: Patterns,
    /// `threepid.email.domain.{whitelist,blacklist}`: `example.org` (that domain),
    /// `*example.org` (it and its subdomains), `.example.org` (subdomains only).
    pub email_domains_allowed: Vec<String>,
    pub email_domains_denied: Vec<String>,
    pub msisdn: Patterns,
}

/// `invite.policy`.
#[derive(Debug, Clone, Default)]
pub struct InvitePolicy {
    /// `ifSender.hasRole`: roles one of which a sender of 3PID invites must hold; empty,
    /// anyone may send them.
    pub sender_roles: Vec<String>,
}

/// A regex that must match the whole text, as Java's `matches()` in ma1sd.
fn whole(text: &str) -> Result<Regex, regex::Error> {
    regex::RegexBuilder::new(&format!("^(?:{text})$"))
        .size_limit(1 << 20)
        .build()
}

fn regexes(s: &Section<'_, '_>, key: &str) -> Vec<Regex> {
    let mut out = Vec::new();
    for (i, text) in s.string_list(key).unwrap_or_default().iter().enumerate() {
        match whole(text) {
            Ok(r) => out.push(r),
            Err(e) => s.problem(&format!("{key}[{i}]"), format!("not a valid regex: {e}")),
        }
    }
    out
}

fn patterns(s: &Section<'_, '_>) -> Patterns {
    let p = s.section("pattern");
    let patterns = Patterns {
        whitelist: regexes(&p, "whitelist"),
        blacklist: regexes(&p, "blacklist"),
    };
    p.finish(&[]);
    patterns
}

fn domains(s: &Section<'_, '_>, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, d) in s
        .string_list(key)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let d = d.trim().to_lowercase();
        let bare = d.trim_start_matches(['*', '.']);
        if bare.is_empty() || bare.contains(['@', '/', ' ']) {
            s.problem(
                &format!("{key}[{i}]"),
                "must be a domain: example.org, *example.org or .example.org",
            );
        } else {
            out.push(d);
        }
    }
    out
}

pub(crate) fn read_auth(s: &Section<'_, '_>) -> AuthConfig {
    let rewrite = s.section("rewrite");
    let user = rewrite.section("user");
    let mut rules = Vec::new();
    for rule in user.list_of_sections("rules") {
        let regex = rule.string("regex");
        let medium = rule.string("medium");
        rule.finish(&[]);
        let Some(text) = regex else {
            rule.problem("regex", "is required");
            continue;
        };
        let regex = match whole(&text) {
            Ok(r) => r,
            Err(e) => {
                rule.problem("regex", format!("not a valid regex: {e}"));
                continue;
            }
        };
        match medium.as_deref().map(Medium::parse) {
            Some(Some(medium)) => rules.push(RewriteRule { regex, medium }),
            Some(None) => rule.problem(
                "medium",
                "must be email or msisdn (only those are looked up here; ma1sd's custom media need its exec or LDAP lookups)",
            ),
            None => rule.problem("medium", "is required"),
        }
    }
    user.finish(&[]);
    rewrite.finish(&[]);
    s.finish(&[]);
    AuthConfig { rewrite: rules }
}

/// `register`; `None` when the section is absent (no registration control).
pub(crate) fn read_register(s: &Section<'_, '_>) -> Option<RegisterPolicy> {
    if s.keys().is_empty() {
        s.finish(&[]);
        return None;
    }
    let policy = s.section("policy");
    let allowed = policy.bool("allowed").unwrap_or(false);
    let invite = policy.bool("invite").unwrap_or(true);
    let threepid = policy.section("threepid");
    let email = threepid.section("email");
    let email_patterns = patterns(&email);
    let domain = email.section("domain");
    let email_domains_allowed = domains(&domain, "whitelist");
    let email_domains_denied = domains(&domain, "blacklist");
    domain.finish(&[]);
    email.finish(&[]);
    let msisdn = threepid.section("msisdn");
    let msisdn_patterns = patterns(&msisdn);
    msisdn.finish(&[]);
    threepid.finish(&[]);
    policy.finish(&[]);
    s.finish(&[(
        "allowed",
        "ma1sd's documentation says register.allowed; the key is register.policy.allowed",
    )]);
    Some(RegisterPolicy {
        allowed,
        invite,
        email: email_patterns,
        email_domains_allowed,
        email_domains_denied,
        msisdn: msisdn_patterns,
    })
}

pub(crate) fn read_invite_policy(s: &Section<'_, '_>) -> InvitePolicy {
    let sender = s.section("ifSender");
    let sender_roles = sender
        .string_list("hasRole")
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .collect();
    sender.finish(&[]);
    s.finish(&[]);
    InvitePolicy { sender_roles }
}

/// Whether an e-mail domain matches a `register.policy` domain entry.
pub fn domain_matches(entry: &str, domain: &str) -> bool {
    if let Some(base) = entry.strip_prefix('*') {
        let base = base.trim_start_matches('.');
        domain == base || domain.ends_with(&format!(".{base}"))
    } else if let Some(base) = entry.strip_prefix('.') {
        domain.ends_with(&format!(".{base}"))
    } else {
        domain == entry
    }
}

#[cfg(test)]
mod tests {
    use super::domain_matches;

    #[test]
    fn domain_globs_match_as_ma1sd_documents() {
        assert!(domain_matches("example.org", "example.org"));
        assert!(!domain_matches("example.org", "a.example.org"));
        assert!(domain_matches("*example.org", "example.org"));
        assert!(domain_matches("*example.org", "a.b.example.org"));
        assert!(!domain_matches("*example.org", "badexample.org"));
        assert!(domain_matches(".example.org", "a.example.org"));
        assert!(!domain_matches(".example.org", "example.org"));
        assert!(!domain_matches(".example.org", "xexample.org"));
    }
}
