//! `accountConfig` (who may register an account with us) and `policy.policies` (the
//! terms every account holder must accept, per language).

use super::reader::Section;

#[derive(Debug, Clone)]
pub struct AccountsConfig {
    /// `accountConfig.allowOnlyTrustDomains`: only users of `matrix.domain` may register.
    pub allow_only_trust_domains: bool,
}

/// `policy.policies`: terms every user must accept.
#[derive(Debug, Clone, Default)]
pub struct TermsConfig {
    pub policies: std::collections::BTreeMap<String, Policy>,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub version: String,
    /// Language code → (name, url).
    pub terms: std::collections::BTreeMap<String, (String, String)>,
}

pub(crate) fn read_accounts(s: &Section<'_, '_>) -> Option<AccountsConfig> {
    let allow_only_trust_domains = s.bool("allowOnlyTrustDomains").unwrap_or(true);
    s.finish(&[]);
    Some(AccountsConfig {
        allow_only_trust_domains,
    })
}

pub(crate) fn read_terms(s: &Section<'_, '_>) -> Option<TermsConfig> {
    let mut policies = std::collections::BTreeMap::new();
    let mut ok = true;
    for (name, p) in s.named_sections("policies") {
        let version = p.scalar("version");
        let mut terms = std::collections::BTreeMap::new();
        for (lang, t) in p.named_sections("terms") {
            let title = t.string("name");
            let url = t.string("url");
            t.finish(&[]);
            match (title, url) {
                (Some(title), Some(url))
                    if url.starts_with("https://") || url.starts_with("http://") =>
                {
                    terms.insert(lang, (title, url));
                }
                (_, Some(url)) if !(url.starts_with("https://") || url.starts_with("http://")) => {
                    t.problem("url", format!("{url:?} must be an http(s) URL"));
                    ok = false;
                }
                _ => {
                    t.problem("name", "each language needs a name and a url");
                    ok = false;
                }
            }
        }
        p.ignored(
            "regexp",
            "ignored: mxisd requires accepted terms on every authenticated endpoint except logout and POST /terms",
        );
        p.finish(&[]);
        match version {
            Some(version) if !terms.is_empty() => {
                policies.insert(name, Policy { version, terms });
            }
            Some(_) => {
                p.problem(
                    "terms",
                    "required: at least one language with a name and a url",
                );
                ok = false;
            }
            None => {
                p.problem("version", "required");
                ok = false;
            }
        }
    }
    s.finish(&[]);
    ok.then_some(TermsConfig { policies })
}
