//! Deserialisation with case-insensitive keys, field paths in errors, and did-you-mean for unknown keys.
//!
//! serde's derive refuses unknown fields (`deny_unknown_fields`) and names the ones it expects. When a key
//! is unknown, we look for an expected field equal to it ignoring case: if there is one the key is renamed and
//! deserialisation retried (Hyper's Go decoder accepted `containerport` for `containerPort`); if not, the error
//! suggests the closest expected field.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::SpecError;

/// How many keys may differ from their field's name in case only: each costs a whole new pass over the
/// document.
const MAX_RENAMES: usize = 256;

pub fn deserialize<T: DeserializeOwned>(mut value: Value) -> Result<T, SpecError> {
    // Each retry renames one key.
    for _ in 0..=MAX_RENAMES {
        let err = match serde_path_to_error::deserialize::<_, T>(&value) {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let msg = err.inner().to_string();
        let mut segs: Vec<Seg> = segments(err.path());
        if let Some((key, expected)) = parse_unknown_field(&msg) {
            // The path ends with the unknown key itself; the object holding it is the rest.
            if matches!(segs.last(), Some(Seg::Key(k)) if *k == key) {
                segs.pop();
            }
            let path = render(&segs);
            if let Some(found) = expected.iter().find(|f| f.eq_ignore_ascii_case(&key)) {
                if rename_key(&mut value, &segs, &key, found) {
                    continue;
                }
            }
            let at = join(&path, &key);
            let hint = suggest(&key, &expected).map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default();
            return Err(SpecError::new(at, format!("unknown field{hint}")));
        }
        return Err(SpecError::new(render(&segs), clean(&msg)));
    }
    Err(SpecError::new("", format!("more than {MAX_RENAMES} keys differ from their field's name in case only: spell them as documented")))
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() || path == "." { key.to_string() } else { format!("{path}.{key}") }
}

#[derive(Debug)]
enum Seg {
    Key(String),
    Index(usize),
}

fn segments(p: &serde_path_to_error::Path) -> Vec<Seg> {
    p.iter()
        .filter_map(|s| match s {
            serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
            serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
            _ => None,
        })
        .collect()
}

fn render(segs: &[Seg]) -> String {
    let mut out = String::new();
    for s in segs {
        match s {
            Seg::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Seg::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    out
}

fn rename_key(v: &mut Value, segs: &[Seg], from: &str, to: &str) -> bool {
    let mut cur = v;
    for s in segs {
        cur = match (s, cur) {
            (Seg::Key(k), Value::Object(m)) => match m.get_mut(k) {
                Some(x) => x,
                None => return false,
            },
            (Seg::Index(i), Value::Array(a)) => match a.get_mut(*i) {
                Some(x) => x,
                None => return false,
            },
            _ => return false,
        };
    }
    let Value::Object(m) = cur else { return false };
    if m.contains_key(to) {
        return false; // both spellings present: report it as unknown rather than guess
    }
    match m.remove(from) {
        Some(x) => {
            m.insert(to.to_string(), x);
            true
        }
        None => false,
    }
}

/// Pulls the key and the expected names out of serde's "unknown field `k`, expected one of `a`, `b`".
fn parse_unknown_field(msg: &str) -> Option<(String, Vec<String>)> {
    let rest = msg.strip_prefix("unknown field `")?;
    let (key, rest) = rest.split_once('`')?;
    let expected = rest.split('`').skip(1).step_by(2).map(str::to_string).collect();
    Some((key.to_string(), expected))
}

fn clean(msg: &str) -> String {
    // serde_json adds " at line N column M" for Value input only when reading text; keep the message as is.
    msg.to_string()
}

/// The expected field closest to `key` (edit distance <= 3, or a case-insensitive prefix match).
pub fn suggest<'a>(key: &str, expected: &'a [String]) -> Option<&'a str> {
    let k = key.to_ascii_lowercase();
    expected
        .iter()
        .map(|e| (distance(&k, &e.to_ascii_lowercase()), e))
        .filter(|(d, e)| *d <= 3.max(e.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, e)| e.as_str())
}

fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}
