//! Editing operations: generated from a seeded RNG, serialized in replay files, applied to any
//! yrs document. Positions and targets are taken modulo what the document holds when the op runs,
//! so an op list stays applicable after the shrinker removed some of its ops.

use std::collections::HashMap;
use std::sync::Arc;

use rand::Rng;
use rand::seq::IndexedRandom;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use yrs::types::text::{Diff, YChange};
use yrs::{
    Any, Array, ArrayPrelim, ArrayRef, Doc, GetString, In, Map, MapPrelim, MapRef, Out, ReadTxn,
    Text, TextPrelim, TextRef, Transact, TransactionMut,
};

/// Names of the root types every simulated client edits.
pub const ROOT_TEXT: &str = "text";
pub const ROOT_MAP: &str = "map";
pub const ROOT_ARRAY: &str = "array";

/// How deep the JSON view and the target walk descend (the generator never nests deeper).
const MAX_DEPTH: usize = 8;

/// A value put into a map or array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Value {
    Str {
        s: String,
    },
    Num {
        n: i64,
    },
    Bool {
        b: bool,
    },
    Null,
    /// A small JSON-like object stored as one opaque value.
    Object {
        k: String,
        v: i64,
    },
    /// A nested Y.Map with one entry.
    Map {
        k: String,
        v: String,
    },
    /// A nested Y.Array with some strings.
    Array {
        items: Vec<String>,
    },
    /// A nested Y.Text.
    Text {
        s: String,
    },
}

/// One edit by one client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "edit", rename_all = "kebab-case")]
pub enum Edit {
    TextInsert {
        target: u32,
        pos: u32,
        s: String,
        attr: Option<(String, bool)>,
    },
    TextDelete {
        target: u32,
        pos: u32,
        len: u32,
    },
    TextFormat {
        target: u32,
        pos: u32,
        len: u32,
        attr: String,
        on: bool,
    },
    MapSet {
        target: u32,
        key: String,
        value: Value,
    },
    MapDelete {
        target: u32,
        key: String,
    },
    ArrayInsert {
        target: u32,
        pos: u32,
        value: Value,
    },
    ArrayDelete {
        target: u32,
        pos: u32,
        len: u32,
    },
    /// Delete one element and insert its (JSON) value elsewhere: how Yjs apps move items.
    ArrayMove {
        target: u32,
        from: u32,
        to: u32,
    },
}

const SNIPPETS: &[&str] = &[
    "a",
    "hello",
    " ",
    "\n",
    "é",
    "日本語",
    "😀",
    "👩‍💻",
    "ß∂ƒ",
    "x😀y",
    "Ω",
    "🇺🇸",
    "tab\t",
];
const KEYS: &[&str] = &["a", "b", "title", "ключ", "🔑", "n"];
const ATTRS: &[&str] = &["bold", "italic", "underline"];

fn gen_string(rng: &mut impl Rng) -> String {
    let n = rng.random_range(1..=3);
    (0..n)
        .map(|_| *SNIPPETS.choose(rng).unwrap_or(&"a"))
        .collect()
}

fn gen_key(rng: &mut impl Rng) -> String {
    KEYS.choose(rng).unwrap_or(&"a").to_string()
}

fn gen_value(rng: &mut impl Rng) -> Value {
    match rng.random_range(0..10) {
        0 | 1 => Value::Str { s: gen_string(rng) },
        2 => Value::Num {
            n: rng.random_range(-1000..1000),
        },
        3 => Value::Bool { b: rng.random() },
        4 => Value::Null,
        5 => Value::Object {
            k: gen_key(rng),
            v: rng.random_range(0..100),
        },
        6 | 7 => Value::Map {
            k: gen_key(rng),
            v: gen_string(rng),
        },
        8 => Value::Array {
            items: (0..rng.random_range(0..3))
                .map(|_| gen_string(rng))
                .collect(),
        },
        _ => Value::Text { s: gen_string(rng) },
    }
}

impl Edit {
    pub fn generate(rng: &mut impl Rng) -> Edit {
        let target = rng.random_range(0..8);
        let pos = rng.random_range(0..64);
        match rng.random_range(0..20) {
            0..=5 => Edit::TextInsert {
                target,
                pos,
                s: gen_string(rng),
                attr: rng
                    .random_bool(0.3)
                    .then(|| (ATTRS.choose(rng).unwrap_or(&"bold").to_string(), true)),
            },
            6..=8 => Edit::TextDelete {
                target,
                pos,
                len: rng.random_range(1..5),
            },
            9 => Edit::TextFormat {
                target,
                pos,
                len: rng.random_range(1..6),
                attr: ATTRS.choose(rng).unwrap_or(&"bold").to_string(),
                on: rng.random(),
            },
            10..=12 => Edit::MapSet {
                target,
                key: gen_key(rng),
                value: gen_value(rng),
            },
            13 => Edit::MapDelete {
                target,
                key: gen_key(rng),
            },
            14..=16 => Edit::ArrayInsert {
                target,
                pos,
                value: gen_value(rng),
            },
            17 | 18 => Edit::ArrayDelete {
                target,
                pos,
                len: rng.random_range(1..3),
            },
            _ => Edit::ArrayMove {
                target,
                from: pos,
                to: rng.random_range(0..64),
            },
        }
    }
}

/// The shared types of a document reachable from the roots, in a deterministic order.
#[derive(Default)]
struct Targets {
    texts: Vec<TextRef>,
    maps: Vec<MapRef>,
    arrays: Vec<ArrayRef>,
}

fn collect(out: &Out, depth: usize, txn: &impl ReadTxn, t: &mut Targets) {
    if depth > MAX_DEPTH {
        return;
    }
    match out {
        Out::YText(x) => t.texts.push(x.clone()),
        Out::YMap(m) => {
            t.maps.push(m.clone());
            let mut entries: Vec<(String, Out)> =
                m.iter(txn).map(|(k, v)| (k.to_owned(), v)).collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            for (_, v) in entries {
                collect(&v, depth + 1, txn, t);
            }
        }
        Out::YArray(a) => {
            t.arrays.push(a.clone());
            let items: Vec<Out> = a.iter(txn).collect();
            for v in items {
                collect(&v, depth + 1, txn, t);
            }
        }
        _ => {}
    }
}

fn roots(doc: &Doc) -> (TextRef, MapRef, ArrayRef) {
    (
        doc.get_or_insert_text(ROOT_TEXT),
        doc.get_or_insert_map(ROOT_MAP),
        doc.get_or_insert_array(ROOT_ARRAY),
    )
}

fn targets(doc: &Doc, txn: &impl ReadTxn, roots: &(TextRef, MapRef, ArrayRef)) -> Targets {
    let mut t = Targets::default();
    collect(&Out::YText(roots.0.clone()), 0, txn, &mut t);
    collect(&Out::YMap(roots.1.clone()), 0, txn, &mut t);
    collect(&Out::YArray(roots.2.clone()), 0, txn, &mut t);
    let _ = doc;
    t
}

fn pick<T: Clone>(items: &[T], i: u32) -> Option<T> {
    if items.is_empty() {
        None
    } else {
        items.get(i as usize % items.len()).cloned()
    }
}

/// Byte offset of the `chars`-th character of `s` (yrs' default offset unit; positions never
/// split a character).
fn utf16_at(s: &str, chars: usize) -> u32 {
    s.char_indices().nth(chars).map_or(s.len(), |(i, _)| i) as u32
}

fn insert_value_in_map(map: &MapRef, txn: &mut TransactionMut, key: &str, value: &Value) {
    map.insert(txn, key, prelim_of(value));
}

fn insert_value_in_array(arr: &ArrayRef, txn: &mut TransactionMut, pos: u32, value: &Value) {
    arr.insert(txn, pos, prelim_of(value));
}

/// The yrs input for a generated value: a nested map, array or text, or a plain value.
fn prelim_of(value: &Value) -> In {
    match value {
        Value::Map { k, v } => MapPrelim::from([(k.as_str(), Any::from(v.as_str()))]).into(),
        Value::Array { items } => ArrayPrelim::from(
            items
                .iter()
                .map(|s| Any::from(s.as_str()))
                .collect::<Vec<_>>(),
        )
        .into(),
        Value::Text { s } => TextPrelim::new(s.as_str()).into(),
        other => In::Any(any_of(other)),
    }
}

fn any_of(v: &Value) -> Any {
    match v {
        Value::Str { s } => Any::from(s.as_str()),
        Value::Num { n } => Any::from(*n as f64),
        Value::Bool { b } => Any::from(*b),
        Value::Null => Any::Null,
        Value::Object { k, v } => {
            let mut m = HashMap::new();
            m.insert(k.clone(), Any::from(*v as f64));
            Any::Map(Arc::new(m))
        }
        Value::Map { .. } | Value::Array { .. } | Value::Text { .. } => Any::Null,
    }
}

/// Applies `edit` to `doc` in one transaction and returns the update it produced (Yjs v1), or
/// `None` if it changed nothing (e.g. a delete in an empty text).
pub fn apply_edit(doc: &Doc, edit: &Edit) -> Option<Vec<u8>> {
    let roots = roots(doc);
    let mut txn = doc.transact_mut();
    let t = targets(doc, &txn, &roots);
    match edit {
        Edit::TextInsert {
            target,
            pos,
            s,
            attr,
        } => {
            let text = pick(&t.texts, *target)?;
            let cur = text.get_string(&txn);
            let n = cur.chars().count();
            let at = utf16_at(&cur, *pos as usize % (n + 1));
            match attr {
                Some((name, on)) => {
                    let mut attrs = HashMap::new();
                    attrs.insert(Arc::from(name.as_str()), Any::from(*on));
                    text.insert_with_attributes(&mut txn, at, s, attrs);
                }
                None => text.insert(&mut txn, at, s),
            }
        }
        Edit::TextDelete { target, pos, len }
        | Edit::TextFormat {
            target, pos, len, ..
        } => {
            let text = pick(&t.texts, *target)?;
            let cur = text.get_string(&txn);
            let n = cur.chars().count();
            if n == 0 {
                return None;
            }
            let start = *pos as usize % n;
            let end = (start + *len as usize).min(n);
            let a = utf16_at(&cur, start);
            let b = utf16_at(&cur, end);
            if let Edit::TextFormat { attr, on, .. } = edit {
                let mut attrs = HashMap::new();
                attrs.insert(
                    Arc::from(attr.as_str()),
                    if *on { Any::from(true) } else { Any::Null },
                );
                text.format(&mut txn, a, b - a, attrs);
            } else {
                text.remove_range(&mut txn, a, b - a);
            }
        }
        Edit::MapSet { target, key, value } => {
            let map = pick(&t.maps, *target)?;
            insert_value_in_map(&map, &mut txn, key, value);
        }
        Edit::MapDelete { target, key } => {
            let map = pick(&t.maps, *target)?;
            map.remove(&mut txn, key);
        }
        Edit::ArrayInsert { target, pos, value } => {
            let arr = pick(&t.arrays, *target)?;
            let at = *pos % (arr.len(&txn) + 1);
            insert_value_in_array(&arr, &mut txn, at, value);
        }
        Edit::ArrayDelete { target, pos, len } => {
            let arr = pick(&t.arrays, *target)?;
            let n = arr.len(&txn);
            if n == 0 {
                return None;
            }
            let start = *pos % n;
            let len = (*len).min(n - start);
            arr.remove_range(&mut txn, start, len);
        }
        Edit::ArrayMove { target, from, to } => {
            let arr = pick(&t.arrays, *target)?;
            let n = arr.len(&txn);
            if n == 0 {
                return None;
            }
            let from = *from % n;
            let item = arr.get(&txn, from)?;
            let json = out_to_json(&item, &txn, 0);
            arr.remove(&mut txn, from);
            let to = *to % n;
            arr.insert(&mut txn, to, json_to_any(&json, 0));
        }
    }
    let update = txn.encode_update_v1();
    (update != [0, 0]).then_some(update)
}

fn any_to_json(a: &Any, depth: usize) -> Json {
    if depth > MAX_DEPTH {
        return Json::String("<too deep>".into());
    }
    match a {
        Any::Null => Json::Null,
        Any::Undefined => Json::String("<undefined>".into()),
        Any::Bool(b) => Json::Bool(*b),
        Any::Number(n) => match n {
            yrs::any::Number::Int(i) => Json::from(*i),
            yrs::any::Number::BigInt(i) => Json::String(format!("{i}n")),
            yrs::any::Number::Float(f) => serde_json::Number::from_f64(*f)
                .map(Json::Number)
                .unwrap_or(Json::Null),
        },
        Any::String(s) => Json::String(s.to_string()),
        Any::Buffer(b) => Json::String(format!("<buffer {}>", b.len())),
        Any::Array(items) => Json::Array(items.iter().map(|x| any_to_json(x, depth + 1)).collect()),
        Any::Map(m) => Json::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), any_to_json(v, depth + 1)))
                .collect(),
        ),
    }
}

fn json_to_any(j: &Json, depth: usize) -> Any {
    if depth > MAX_DEPTH {
        return Any::Null;
    }
    match j {
        Json::Null => Any::Null,
        Json::Bool(b) => Any::from(*b),
        Json::Number(n) => Any::from(n.as_f64().unwrap_or(0.0)),
        Json::String(s) => Any::from(s.as_str()),
        Json::Array(a) => Any::Array(a.iter().map(|x| json_to_any(x, depth + 1)).collect()),
        Json::Object(m) => Any::Map(Arc::new(
            m.iter()
                .map(|(k, v)| (k.clone(), json_to_any(v, depth + 1)))
                .collect(),
        )),
    }
}

fn text_to_json(t: &TextRef, txn: &impl ReadTxn, depth: usize) -> Json {
    let diff: Vec<Diff<YChange>> = t.diff(txn, YChange::identity);
    // canonical form (as Yjs' toDelta): adjacent strings with equal attributes are one chunk
    let mut chunks: Vec<(Json, Option<Json>)> = Vec::new();
    for d in &diff {
        let insert = out_to_json(&d.insert, txn, depth + 1);
        let attrs = d
            .attributes
            .as_ref()
            .filter(|a| !a.is_empty())
            .map(|attrs| {
                Json::Object(
                    attrs
                        .iter()
                        .map(|(k, v)| (k.to_string(), any_to_json(v, depth + 1)))
                        .collect(),
                )
            });
        if let (Some((Json::String(prev), prev_attrs)), Json::String(s)) =
            (chunks.last_mut(), &insert)
            && *prev_attrs == attrs
        {
            prev.push_str(s);
            continue;
        }
        chunks.push((insert, attrs));
    }
    Json::Array(
        chunks
            .into_iter()
            .map(|(insert, attrs)| {
                let mut o = serde_json::Map::new();
                o.insert("insert".into(), insert);
                if let Some(a) = attrs {
                    o.insert("attributes".into(), a);
                }
                Json::Object(o)
            })
            .collect(),
    )
}

/// A JSON view of a shared value, bounded in depth (never recurses past `MAX_DEPTH`).
pub fn out_to_json(out: &Out, txn: &impl ReadTxn, depth: usize) -> Json {
    if depth > MAX_DEPTH {
        return Json::String("<too deep>".into());
    }
    match out {
        Out::Any(a) => any_to_json(a, depth),
        Out::YText(t) => serde_json::json!({ "text": text_to_json(t, txn, depth) }),
        Out::YMap(m) => Json::Object(
            m.iter(txn)
                .map(|(k, v)| (k.to_owned(), out_to_json(&v, txn, depth + 1)))
                .collect(),
        ),
        Out::YArray(a) => Json::Array(
            a.iter(txn)
                .map(|v| out_to_json(&v, txn, depth + 1))
                .collect(),
        ),
        _ => Json::String("<other shared type>".into()),
    }
}

/// The whole document as JSON (with text formatting) and the root text as a plain string.
pub fn doc_view(doc: &Doc) -> (Json, String) {
    let roots = roots(doc);
    let txn = doc.transact();
    let json = serde_json::json!({
        ROOT_TEXT: out_to_json(&Out::YText(roots.0.clone()), &txn, 0),
        ROOT_MAP: out_to_json(&Out::YMap(roots.1.clone()), &txn, 0),
        ROOT_ARRAY: out_to_json(&Out::YArray(roots.2.clone()), &txn, 0),
    });
    let text = roots.0.get_string(&txn);
    (json, text)
}

/// A client replica: a yrs document plus the updates it must send, captured after each commit
/// the way y-websocket's `doc.on('update')` does. That includes formatting cleanups: yrs (like
/// Yjs) deletes redundant formatting markers when a transaction commits, also while applying a
/// remote update, and those deletions must reach the other replicas.
pub struct Replica {
    pub doc: Doc,
    outbox: Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
}

/// The transaction origin of updates received from the network.
const REMOTE: &str = "remote";

impl Replica {
    pub fn new(client_id: u64) -> Replica {
        let doc = Doc::with_client_id(client_id);
        let outbox: Arc<std::sync::Mutex<Vec<Vec<u8>>>> = Arc::default();
        let sink = outbox.clone();
        let _ = doc.observe_update_v1("fuzz-outbox", move |txn, e| {
            let remote = txn
                .origin()
                .is_some_and(|o| o.as_ref() == REMOTE.as_bytes());
            if e.update.as_slice() != [0, 0] && (!remote || !txn.cleanups().is_empty()) {
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(e.update.clone());
            }
        });
        Replica { doc, outbox }
    }

    /// Applies a local edit; returns whether it changed anything.
    pub fn edit(&self, edit: &Edit) -> bool {
        apply_edit(&self.doc, edit).is_some()
    }

    /// Applies an update received from the server.
    pub fn apply_remote(&self, update: &[u8]) -> Result<(), String> {
        use yrs::updates::decoder::Decode;
        let u = yrs::Update::decode_v1(update).map_err(|e| e.to_string())?;
        self.doc
            .transact_mut_with(REMOTE)
            .apply_update(u)
            .map_err(|e| e.to_string())
    }

    /// Updates committed since the last call, to be sent (or dropped while offline: the next
    /// sync carries them).
    pub fn take_outgoing(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.outbox.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use yrs::Update;
    use yrs::updates::decoder::Decode;

    #[test]
    fn generated_edits_apply_and_their_updates_reproduce_the_doc() {
        let mut rng = StdRng::seed_from_u64(7);
        let a = Doc::with_client_id(1);
        let b = Doc::with_client_id(2);
        let mut applied = 0;
        for _ in 0..500 {
            let e = Edit::generate(&mut rng);
            let json = serde_json::to_string(&e).unwrap();
            let back: Edit = serde_json::from_str(&json).unwrap();
            assert_eq!(back, e);
            if let Some(u) = apply_edit(&a, &e) {
                applied += 1;
                b.transact_mut()
                    .apply_update(Update::decode_v1(&u).unwrap())
                    .unwrap();
            }
        }
        assert!(applied > 300, "{applied}");
        assert_eq!(doc_view(&a), doc_view(&b));
        assert!(doc_view(&a).1.chars().count() > 10);
    }
}
