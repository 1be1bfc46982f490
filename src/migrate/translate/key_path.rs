//! Key paths over a YAML tree, as the config loader names keys (`a.b[0].c`): find,
//! read, remove and set the value a path names. Names chosen by operators may hold
//! dots, so a name is matched greedily against the mapping's real keys. No knowledge
//! of ma1sd or of our config lives here.

use serde_yaml_ng::{Mapping, Value};

#[derive(Debug, Clone)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

/// `a.b[0].c` → [("a",[]), ("b",[0]), ("c",[])].
pub(super) fn parse(path: &str) -> Vec<(String, Vec<usize>)> {
    path.split('.')
        .map(|part| {
            let (name, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
            let mut indices = Vec::new();
            while let Some(r) = rest.strip_prefix('[') {
                let Some(end) = r.find(']') else { break };
                if let Ok(i) = r[..end].parse() {
                    indices.push(i);
                }
                rest = &r[end + 1..];
            }
            (name.to_owned(), indices)
        })
        .collect()
}

pub(super) fn locate(v: &Value, parts: &[(String, Vec<usize>)]) -> Option<Vec<Seg>> {
    if parts.is_empty() {
        return Some(Vec::new());
    }
    let Value::Mapping(m) = v else { return None };
    for j in 1..=parts.len() {
        if parts[..j - 1].iter().any(|p| !p.1.is_empty()) {
            break;
        }
        let name = parts[..j]
            .iter()
            .map(|p| p.0.as_str())
            .collect::<Vec<_>>()
            .join(".");
        let Some(mut child) = m.get(name.as_str()) else {
            continue;
        };
        let mut segs = vec![Seg::Key(name)];
        let mut ok = true;
        for &i in &parts[j - 1].1 {
            match child {
                Value::Sequence(items) if i < items.len() => {
                    child = &items[i];
                    segs.push(Seg::Index(i));
                }
                _ => {
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            if let Some(rest) = locate(child, &parts[j..]) {
                segs.extend(rest);
                return Some(segs);
            }
        }
    }
    None
}

fn get_at<'v>(v: &'v Value, segs: &[Seg]) -> Option<&'v Value> {
    segs.iter().try_fold(v, |v, s| match (s, v) {
        (Seg::Key(k), Value::Mapping(m)) => m.get(k.as_str()),
        (Seg::Index(i), Value::Sequence(items)) => items.get(*i),
        _ => None,
    })
}

pub(super) fn get_at_mut<'v>(v: &'v mut Value, segs: &[Seg]) -> Option<&'v mut Value> {
    segs.iter().try_fold(v, |v, s| match (s, v) {
        (Seg::Key(k), Value::Mapping(m)) => m.get_mut(k.as_str()),
        (Seg::Index(i), Value::Sequence(items)) => items.get_mut(*i),
        _ => None,
    })
}

pub(super) fn get_path<'v>(tree: &'v Value, key: &str) -> Option<&'v Value> {
    let segs = locate(tree, &parse(key))?;
    match get_at(tree, &segs)? {
        Value::Null => None,
        v => Some(v),
    }
}

/// A scalar as text; `Err` when the key holds a list or mapping.
pub(super) fn scalar_at(tree: &Value, key: &str) -> Result<Option<String>, String> {
    match get_path(tree, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(Value::Bool(b)) => Ok(Some(b.to_string())),
        Some(_) => Err("expected a single value, found a list or mapping".into()),
    }
}

/// Removes the key at `key`, then any mapping that removal left empty. Returns
/// whether the key was there.
pub(super) fn remove_path(tree: &mut Value, key: &str) -> bool {
    let Some(segs) = locate(tree, &parse(key)) else {
        return false;
    };
    let mut removed = false;
    for depth in (1..=segs.len()).rev() {
        let (parent, last) = segs[..depth].split_at(depth - 1);
        let Some(parent) = get_at_mut(tree, parent) else {
            break;
        };
        let empty = |v: &Value| matches!(v, Value::Mapping(m) if m.is_empty());
        let take = depth == segs.len() || get_at(parent, last).is_some_and(empty);
        if !take {
            break;
        }
        match (&last[0], parent) {
            (Seg::Key(k), Value::Mapping(m)) => {
                m.remove(k.as_str());
            }
            (Seg::Index(_), _) | (Seg::Key(_), _) => break,
        }
        removed = true;
    }
    removed
}

/// Sets `path` (plain names) to `value`, creating mappings on the way.
pub(super) fn set_path(tree: &mut Value, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut v = tree;
    for name in parents {
        let Value::Mapping(m) = v else { return };
        let child = m
            .entry(Value::from(*name))
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        if !matches!(child, Value::Mapping(_)) {
            *child = Value::Mapping(Mapping::new());
        }
        v = child;
    }
    if let Value::Mapping(m) = v {
        m.insert(Value::from(*last), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_with_dots_and_indices() {
        let mut v: Value = serde_yaml_ng::from_str(
            "policy:\n  policies:\n    tos.v1:\n      regexp: [a]\n      version: 1\nlist:\n  - a: 1\n    b: 2\n",
        )
        .unwrap();
        assert!(remove_path(&mut v, "policy.policies.tos.v1.regexp"));
        assert!(get_path(&v, "policy.policies.tos.v1.version").is_some());
        assert!(remove_path(&mut v, "list[0].b"));
        assert!(get_path(&v, "list[0].a").is_some());
        assert!(!remove_path(&mut v, "list[3].a"));
        assert!(remove_path(&mut v, "policy.policies.tos.v1.version"));
        // Emptied mappings go with their last key.
        assert!(get_path(&v, "policy").is_none());
    }
}
