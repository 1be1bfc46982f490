//! A reader over the parsed YAML tree that collects every problem instead of stopping at
//! the first, knows each value's key path for messages, applies `MXISD_*` environment
//! overrides, and reports keys nobody read as unknown (with a hint when the key is one
//! of ma1sd's that mxisd does not use).

use super::units::{parse_duration, parse_size};
use serde_yaml_ng::{Mapping, Value};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Looks up environment variables; injected so tests do not touch the process's env.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// What one load saw of the file's keys, for `mxisd import-ma1sd` (which drops the keys
/// that do not apply and rewrites relative paths).
#[derive(Debug, Default, Clone)]
pub struct Trace {
    /// Keys nobody reads (unknown here, or ma1sd's and without a use here), with why.
    pub unused: Vec<(String, String)>,
    /// Keys accepted for compatibility that have no effect, with why.
    pub ignored: Vec<(String, String)>,
    /// Key paths whose value is a file path (resolved against the config's directory).
    pub paths: Vec<String>,
}

/// Shared by every section of one load.
pub struct Ctx<'a> {
    problems: RefCell<Vec<String>>,
    warnings: RefCell<Vec<String>>,
    trace: RefCell<Trace>,
    env: EnvLookup<'a>,
    /// Relative paths in the file are resolved against this directory.
    base_dir: PathBuf,
}

impl<'a> Ctx<'a> {
    pub fn new(env: EnvLookup<'a>, base_dir: PathBuf) -> Self {
        Self {
            problems: RefCell::new(Vec::new()),
            warnings: RefCell::new(Vec::new()),
            trace: RefCell::new(Trace::default()),
            env,
            base_dir,
        }
    }

    pub fn problem(&self, path: &str, message: impl std::fmt::Display) {
        self.problems
            .borrow_mut()
            .push(format!("{path}: {message}"));
    }

    pub fn warning(&self, path: &str, message: impl std::fmt::Display) {
        self.warnings
            .borrow_mut()
            .push(format!("{path}: {message}"));
    }

    pub fn into_problems(self) -> Vec<String> {
        self.problems.into_inner()
    }

    /// Problems and warnings.
    pub fn into_parts(self) -> (Vec<String>, Vec<String>) {
        (self.problems.into_inner(), self.warnings.into_inner())
    }

    /// Problems, warnings and the trace of keys.
    pub fn into_traced_parts(self) -> (Vec<String>, Vec<String>, Trace) {
        (
            self.problems.into_inner(),
            self.warnings.into_inner(),
            self.trace.into_inner(),
        )
    }

    pub fn root<'v>(&'a self, value: &'v Value) -> Section<'a, 'v> {
        let map = match value {
            Value::Mapping(m) => Some(m),
            Value::Null => None,
            _ => {
                self.problem("(top level)", "the configuration must be a YAML mapping");
                None
            }
        };
        Section {
            ctx: self,
            path: String::new(),
            map,
            seen: RefCell::new(BTreeSet::new()),
        }
    }
}

/// The name of the environment variable overriding a key path:
/// `server.publicUrl` → `MXISD_SERVER_PUBLICURL`.
pub fn env_name(path: &str) -> String {
    let mut name = String::from("MXISD_");
    for c in path.chars() {
        name.push(if c == '.' {
            '_'
        } else {
            c.to_ascii_uppercase()
        });
    }
    name
}

/// One mapping of the config file, at a key path.
pub struct Section<'a, 'v> {
    ctx: &'a Ctx<'a>,
    path: String,
    map: Option<&'v Mapping>,
    seen: RefCell<BTreeSet<String>>,
}

impl<'a, 'v> Section<'a, 'v> {
    fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub fn problem(&self, key: &str, message: impl std::fmt::Display) {
        self.ctx.problem(&self.key_path(key), message);
    }

    /// True when neither the file (null counts as absent) nor the environment gives
    /// `key` a value.
    pub fn string_is_absent(&self, key: &str) -> bool {
        let in_file = self
            .map
            .and_then(|m| m.get(key))
            .is_some_and(|v| !matches!(v, Value::Null));
        !in_file && (self.ctx.env)(&env_name(&self.key_path(key))).is_none()
    }

    fn raw(&self, key: &str) -> Option<&'v Value> {
        self.seen.borrow_mut().insert(key.to_owned());
        match self.map?.get(key)? {
            Value::Null => None,
            v => Some(v),
        }
    }

    /// The value of an environment override for `key`, if set.
    fn env(&self, key: &str) -> Option<(String, String)> {
        self.seen.borrow_mut().insert(key.to_owned());
        let name = env_name(&self.key_path(key));
        (self.ctx.env)(&name).map(|v| (name, v))
    }

    /// A warning about `key` (printed by `check-config`, logged at start).
    pub fn warning(&self, key: &str, message: impl std::fmt::Display) {
        self.ctx.warning(&self.key_path(key), message);
    }

    /// A key of ma1sd's that is accepted but has no effect here: a warning, not an error.
    pub fn ignored(&self, key: &str, why: &str) {
        if self.raw(key).is_some() {
            self.ctx.warning(&self.key_path(key), why);
            self.ctx
                .trace
                .borrow_mut()
                .ignored
                .push((self.key_path(key), why.to_owned()));
        }
    }

    /// A section of ma1sd's for a feature mxisd does not have. Switched off (`enabled:
    /// false`, or nothing but empty lists, `false`, empty text, or the `defaults` given as
    /// `(leaf path, value)`, `"*"` for any value) it is accepted with a note; asking for
    /// the feature, it is a problem that says so.
    pub fn absent_feature(&self, key: &str, feature: &str, defaults: &[(&str, &str)]) {
        let Some(value) = self.raw(key) else { return };
        let path = self.key_path(key);
        if is_switched_off(value, "", defaults) {
            let why =
                format!("accepted and ignored: {feature} is off here, and mxisd does not have it");
            self.ctx.warning(&path, &why);
            self.ctx.trace.borrow_mut().ignored.push((path, why));
        } else {
            let why = format!(
                "{feature} is not available in mxisd; remove {path} (or switch it off with enabled: false)"
            );
            self.ctx.problem(&path, &why);
            self.ctx.trace.borrow_mut().unused.push((path, why));
        }
    }

    /// The entries of a mapping whose keys are names chosen by the operator
    /// (`policy.policies.<name>`), each as a section.
    pub fn named_sections(&self, key: &str) -> Vec<(String, Section<'a, 'v>)> {
        let path = self.key_path(key);
        match self.raw(key) {
            None => Vec::new(),
            Some(Value::Mapping(m)) => m
                .iter()
                .map(|(k, v)| {
                    let name = match k {
                        Value::String(s) => s.clone(),
                        other => serde_yaml_ng::to_string(other)
                            .unwrap_or_default()
                            .trim()
                            .to_owned(),
                    };
                    let map = match v {
                        Value::Mapping(m) => Some(m),
                        Value::Null => None,
                        other => {
                            self.ctx.problem(
                                &format!("{path}.{name}"),
                                format!("expected a mapping, found {}", kind(other)),
                            );
                            None
                        }
                    };
                    let section = Section {
                        ctx: self.ctx,
                        path: format!("{path}.{name}"),
                        map,
                        seen: RefCell::new(BTreeSet::new()),
                    };
                    (name, section)
                })
                .collect(),
            Some(other) => {
                self.problem(key, format!("expected a mapping, found {}", kind(other)));
                Vec::new()
            }
        }
    }

    /// A list of mappings (`dns.overwrite.homeserver.federation: [{name, value}]`).
    pub fn list_of_sections(&self, key: &str) -> Vec<Section<'a, 'v>> {
        let path = self.key_path(key);
        match self.raw(key) {
            None => Vec::new(),
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| match item {
                    Value::Mapping(m) => Some(Section {
                        ctx: self.ctx,
                        path: format!("{path}[{i}]"),
                        map: Some(m),
                        seen: RefCell::new(BTreeSet::new()),
                    }),
                    other => {
                        self.ctx.problem(
                            &format!("{path}[{i}]"),
                            format!("expected a mapping, found {}", kind(other)),
                        );
                        None
                    }
                })
                .collect(),
            Some(other) => {
                self.problem(key, format!("expected a list, found {}", kind(other)));
                Vec::new()
            }
        }
    }

    /// A list of strings; a single string is taken as a list of one.
    pub fn string_list(&self, key: &str) -> Option<Vec<String>> {
        if let Some((_, v)) = self.env(key) {
            return Some(
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect(),
            );
        }
        match self.raw(key)? {
            Value::String(s) => Some(vec![s.clone()]),
            Value::Sequence(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        Value::Number(n) => out.push(n.to_string()),
                        other => {
                            self.problem(
                                &format!("{key}[{i}]"),
                                format!("expected a string, found {}", kind(other)),
                            );
                            return None;
                        }
                    }
                }
                Some(out)
            }
            other => {
                self.problem(
                    key,
                    format!("expected a list of strings, found {}", kind(other)),
                );
                None
            }
        }
    }

    /// A list of address ranges (`10.0.0.0/8`, or a bare address for one host); `None`
    /// when the key is absent or an entry is not a range (a problem is reported).
    pub fn cidr_list(&self, key: &str) -> Option<Vec<ipnet::IpNet>> {
        let mut out = Vec::new();
        let mut ok = true;
        for cidr in self.string_list(key)? {
            match cidr
                .parse::<ipnet::IpNet>()
                .or_else(|_| cidr.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
            {
                Ok(net) => out.push(net),
                Err(_) => {
                    self.problem(
                        key,
                        format!("{cidr:?} is not an address or range like 10.0.0.0/8"),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    /// The keys of this mapping (for mappings whose keys the operator chooses, like
    /// `ldap.attribute.threepid.<medium>`).
    pub fn keys(&self) -> Vec<String> {
        self.map
            .map(|m| {
                m.keys()
                    .filter_map(|k| match k {
                        Value::String(s) => Some(s.clone()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A nested mapping; absent or null gives an empty section.
    pub fn section(&self, key: &str) -> Section<'a, 'v> {
        let map = match self.raw(key) {
            Some(Value::Mapping(m)) => Some(m),
            None => None,
            Some(other) => {
                self.problem(key, format!("expected a mapping, found {}", kind(other)));
                None
            }
        };
        Section {
            ctx: self.ctx,
            path: self.key_path(key),
            map,
            seen: RefCell::new(BTreeSet::new()),
        }
    }

    /// A scalar as text: strings, numbers and booleans all read as their text (for
    /// values like versions that YAML may read as numbers: `version: 1.0`).
    pub fn scalar(&self, key: &str) -> Option<String> {
        if let Some((_, v)) = self.env(key) {
            return Some(v);
        }
        match self.raw(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            other => {
                self.problem(
                    key,
                    format!("expected a single value, found {}", kind(other)),
                );
                None
            }
        }
    }

    pub fn string(&self, key: &str) -> Option<String> {
        if let Some((_, v)) = self.env(key) {
            return Some(v);
        }
        match self.raw(key)? {
            Value::String(s) => Some(s.clone()),
            other => {
                self.problem(key, format!("expected a string, found {}", kind(other)));
                None
            }
        }
    }

    pub fn bool(&self, key: &str) -> Option<bool> {
        if let Some((name, v)) = self.env(key) {
            let parsed = parse_bool(&v);
            if parsed.is_none() {
                self.problem(key, format!("{name}={v:?} is not true or false"));
            }
            return parsed;
        }
        match self.raw(key)? {
            Value::Bool(b) => Some(*b),
            // YAML 1.1 spellings SnakeYAML accepted for ma1sd.
            Value::String(t) if parse_bool(t).is_some() => parse_bool(t),
            other => {
                self.problem(
                    key,
                    format!("expected true or false, found {}", kind(other)),
                );
                None
            }
        }
    }

    pub fn u64(&self, key: &str) -> Option<u64> {
        let text = self.scalar(key)?;
        match text.trim().parse::<u64>() {
            Ok(n) => Some(n),
            Err(_) => {
                self.problem(key, format!("expected a whole number, found {text:?}"));
                None
            }
        }
    }

    pub fn port(&self, key: &str) -> Option<u16> {
        let n = self.u64(key)?;
        match u16::try_from(n) {
            Ok(p) => Some(p),
            Err(_) => {
                self.problem(key, format!("{n} is not a TCP port (0-65535)"));
                None
            }
        }
    }

    pub fn duration(&self, key: &str) -> Option<Duration> {
        let text = self.scalar(key)?;
        parse_duration(&text).map_err(|e| self.problem(key, e)).ok()
    }

    pub fn size(&self, key: &str) -> Option<u64> {
        let text = self.scalar(key)?;
        parse_size(&text).map_err(|e| self.problem(key, e)).ok()
    }

    /// A filesystem path, resolved against the config file's directory.
    pub fn path(&self, key: &str) -> Option<PathBuf> {
        let text = self.string(key)?;
        if text.trim().is_empty() {
            self.problem(key, "must not be empty");
            return None;
        }
        self.ctx.trace.borrow_mut().paths.push(self.key_path(key));
        Some(self.resolve(Path::new(&text)))
    }

    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.ctx.base_dir.join(path)
        }
    }

    /// A secret: inline under `key`, from `MXISD_<PATH>`, or read from the file named by
    /// `<key>File`. Never echoed in messages.
    pub fn secret(&self, key: &str) -> Option<Secret> {
        let file_key = format!("{key}File");
        let inline = self.string(key);
        let file = self.path(&file_key);
        match (inline, file) {
            (Some(_), Some(_)) => {
                self.problem(key, format!("set either {key} or {file_key}, not both"));
                None
            }
            (Some(v), None) => Some(Secret(v)),
            (None, Some(path)) => match std::fs::read_to_string(&path) {
                Ok(v) => Some(Secret(v.trim_end_matches(['\r', '\n']).to_owned())),
                Err(e) => {
                    self.problem(&file_key, format!("cannot read {}: {e}", path.display()));
                    None
                }
            },
            (None, None) => None,
        }
    }

    /// Every key of the mapping that has not been read is reported as unknown.
    /// `hints` maps key names of this section to an explanation.
    pub fn finish(&self, hints: &[(&str, &str)]) {
        let Some(map) = self.map else { return };
        let seen = self.seen.borrow();
        for key in map.keys() {
            let name = match key {
                Value::String(s) => s.clone(),
                other => serde_yaml_ng::to_string(other)
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            };
            if seen.contains(&name) {
                continue;
            }
            let why = match hints.iter().find(|(k, _)| *k == name) {
                Some((_, hint)) => *hint,
                None => UNKNOWN_KEY,
            };
            self.problem(&name, why);
            self.ctx
                .trace
                .borrow_mut()
                .unused
                .push((self.key_path(&name), why.to_owned()));
        }
    }
}

/// Whether a ma1sd feature section asks for nothing (see [`Section::absent_feature`]).
fn is_switched_off(value: &Value, at: &str, defaults: &[(&str, &str)]) -> bool {
    let scalar = match value {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    if let Some(text) = scalar {
        let is_default = defaults
            .iter()
            .any(|(path, v)| *path == at && (*v == "*" || v.eq_ignore_ascii_case(&text)));
        return is_default || text.is_empty() || text == "false";
    }
    match value {
        Value::Null => true,
        Value::Sequence(items) => items.is_empty(),
        Value::Mapping(m) => {
            let enabled = m.get("enabled").and_then(|v| match v {
                Value::Bool(b) => Some(*b),
                Value::String(s) => parse_bool(s),
                _ => None,
            });
            match enabled {
                Some(on) => !on,
                None => m.iter().all(|(k, v)| {
                    let name = k.as_str().unwrap_or_default();
                    let child = if at.is_empty() {
                        name.to_owned()
                    } else {
                        format!("{at}.{name}")
                    };
                    is_switched_off(v, &child, defaults)
                }),
            }
        }
        _ => false,
    }
}

const UNKNOWN_KEY: &str =
    "unknown key (check its spelling and nesting; see the configuration reference in README.md)";

/// `true`/`false` and the YAML 1.1 and shell spellings (`yes`, `on`, `1`, ...).
fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// A secret value from the config; its Debug output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if FINGERPRINTS.with(std::cell::Cell::get) {
            use std::hash::{Hash as _, Hasher as _};
            let mut h = std::hash::DefaultHasher::new();
            self.0.hash(&mut h);
            write!(f, "<redacted {:016x}>", h.finish())
        } else {
            f.write_str("<redacted>")
        }
    }
}

thread_local! {
    /// Set only inside [`debug_with_fingerprints`].
    static FINGERPRINTS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `value`'s Debug text with every [`Secret`] shown as a fingerprint of its value
/// instead of the bare `<redacted>`, so that two configs compare unequal when only a
/// password changed. For comparisons only: the text must not be logged or shown.
pub fn debug_with_fingerprints<T: std::fmt::Debug>(value: &T) -> String {
    /// Turns fingerprints off again however formatting ends.
    struct Off;
    impl Drop for Off {
        fn drop(&mut self) {
            FINGERPRINTS.with(|on| on.set(false));
        }
    }
    FINGERPRINTS.with(|on| on.set(true));
    let _off = Off;
    format!("{value:?}")
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}
