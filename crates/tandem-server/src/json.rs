//! The document as JSON for `GET /api/rooms/{room}/json`, without yrs's `to_json`.
//!
//! yrs's `ToJson` recurses once per nested shared type, so a document holding thousands of
//! nested maps (which validation accepts: each level is a separate item) overflows the stack and
//! kills the process. This walker counts the nesting and stops at [`MAX_JSON_DEPTH`] with
//! [`TooDeep`] instead. Text becomes a string, maps objects, arrays arrays, XML its string form.
//!
//! Root types arrive from remote updates without a declared kind (the update format names roots
//! only), so their kind is inferred from their content the way yrs does it: text chunks make a
//! string, keyed entries an object, XML children an XML string, other list items an array.

use base64::Engine;
use serde_json::{Map, Value};
use yrs::branch::BranchPtr;
use yrs::types::GetString;
use yrs::types::xml::{XmlElementRef, XmlFragment, XmlFragmentRef, XmlOut, XmlTextRef};
use yrs::{Any, Array, ArrayRef, Doc, Map as _, MapRef, Out, ReadTxn, TextRef, Transact};

/// Deepest nesting of shared types (plus JSON-like values) rendered.
pub const MAX_JSON_DEPTH: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the document nests deeper than {MAX_JSON_DEPTH} levels; fetch the binary update instead")]
pub struct TooDeep;

/// Every root type of `doc` as one JSON object keyed by root name.
pub fn doc_to_json(doc: &Doc) -> Result<Value, TooDeep> {
    let txn = doc.transact();
    let mut roots: Vec<(String, Out)> = txn
        .root_refs()
        .map(|(name, out)| (name.to_owned(), out))
        .collect();
    roots.sort_by(|a, b| a.0.cmp(&b.0));
    let mut obj = Map::new();
    for (name, out) in roots {
        let value = match out {
            Out::UndefinedRef(branch) => infer(branch, &txn)?,
            other => out_to_json(other, &txn, 1)?,
        };
        obj.insert(name, value);
    }
    Ok(Value::Object(obj))
}

fn check(depth: usize) -> Result<(), TooDeep> {
    if depth > MAX_JSON_DEPTH {
        Err(TooDeep)
    } else {
        Ok(())
    }
}

fn infer<T: ReadTxn>(branch: BranchPtr, txn: &T) -> Result<Value, TooDeep> {
    let has_map = MapRef::from(branch).len(txn) > 0;
    let text = TextRef::from(branch).get_string(txn);
    if !text.is_empty() {
        return Ok(Value::String(if has_map {
            XmlTextRef::from(branch).get_string(txn)
        } else {
            text
        }));
    }
    let array = ArrayRef::from(branch);
    if array.len(txn) > 0 {
        let first_is_xml = array
            .get(txn, 0)
            .is_some_and(|v| XmlOut::try_from(v).is_ok());
        if first_is_xml {
            let mut s = String::new();
            xml_children(&XmlFragmentRef::from(branch), txn, 1, &mut s)?;
            return Ok(Value::String(s));
        }
        return out_to_json(Out::YArray(array), txn, 1);
    }
    if has_map {
        return out_to_json(Out::YMap(MapRef::from(branch)), txn, 1);
    }
    Ok(Value::Null)
}

fn out_to_json<T: ReadTxn>(out: Out, txn: &T, depth: usize) -> Result<Value, TooDeep> {
    check(depth)?;
    Ok(match out {
        Out::Any(any) => any_to_json(&any, depth)?,
        Out::YText(t) => Value::String(t.get_string(txn)),
        Out::YArray(a) => {
            let mut items = Vec::new();
            for v in a.iter(txn) {
                items.push(out_to_json(v, txn, depth + 1)?);
            }
            Value::Array(items)
        }
        Out::YMap(m) => {
            let mut entries: Vec<(String, Out)> =
                m.iter(txn).map(|(k, v)| (k.to_owned(), v)).collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let mut obj = Map::new();
            for (k, v) in entries {
                obj.insert(k, out_to_json(v, txn, depth + 1)?);
            }
            Value::Object(obj)
        }
        Out::YXmlElement(e) => {
            let mut s = String::new();
            xml_element(&e, txn, depth, &mut s)?;
            Value::String(s)
        }
        Out::YXmlFragment(f) => {
            let mut s = String::new();
            xml_children(&f, txn, depth, &mut s)?;
            Value::String(s)
        }
        Out::YXmlText(t) => Value::String(t.get_string(txn)),
        Out::YDoc(d) => {
            let mut obj = Map::new();
            obj.insert("guid".into(), Value::String(d.guid().to_string()));
            Value::Object(obj)
        }
        Out::UndefinedRef(b) => infer(b, txn)?,
        #[allow(unreachable_patterns)]
        _ => Value::Null,
    })
}

fn xml_children<F: XmlFragment, T: ReadTxn>(
    f: &F,
    txn: &T,
    depth: usize,
    out: &mut String,
) -> Result<(), TooDeep> {
    check(depth)?;
    for child in f.children(txn) {
        match child {
            XmlOut::Element(e) => xml_element(&e, txn, depth + 1, out)?,
            XmlOut::Fragment(f) => xml_children(&f, txn, depth + 1, out)?,
            XmlOut::Text(t) => out.push_str(&t.get_string(txn)),
        }
    }
    Ok(())
}

fn xml_element<T: ReadTxn>(
    e: &XmlElementRef,
    txn: &T,
    depth: usize,
    out: &mut String,
) -> Result<(), TooDeep> {
    check(depth)?;
    let tag = e.tag().to_string();
    out.push('<');
    out.push_str(&tag);
    let mut attrs: Vec<(String, Out)> = yrs::types::xml::Xml::attributes(e, txn)
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    attrs.sort_by(|a, b| a.0.cmp(&b.0));
    for (k, v) in attrs {
        let v = match v {
            Out::Any(Any::String(s)) => s.to_string(),
            Out::Any(any) => any.to_string(),
            _ => String::new(),
        };
        out.push(' ');
        out.push_str(&k);
        out.push_str("=\"");
        out.push_str(&v);
        out.push('"');
    }
    out.push('>');
    xml_children(e, txn, depth, out)?;
    out.push_str("</");
    out.push_str(&tag);
    out.push('>');
    Ok(())
}

fn any_to_json(any: &Any, depth: usize) -> Result<Value, TooDeep> {
    check(depth)?;
    Ok(match any {
        Any::Null | Any::Undefined => Value::Null,
        Any::Bool(b) => Value::Bool(*b),
        Any::Number(n) => match n {
            // a BigInt is a JSON integer too: its exact digits (JSON has no bigint type)
            yrs::any::Number::Int(i) | yrs::any::Number::BigInt(i) => Value::from(*i),
            yrs::any::Number::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or(Value::Null),
        },
        Any::String(s) => Value::String(s.to_string()),
        Any::Buffer(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Any::Array(items) => {
            let mut v = Vec::with_capacity(items.len());
            for i in items.iter() {
                v.push(any_to_json(i, depth + 1)?);
            }
            Value::Array(v)
        }
        Any::Map(m) => {
            let mut entries: Vec<(&String, &Any)> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            let mut obj = Map::new();
            for (k, v) in entries {
                obj.insert(k.clone(), any_to_json(v, depth + 1)?);
            }
            Value::Object(obj)
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use yrs::updates::decoder::Decode;
    use yrs::{Text, Update, WriteTxn};

    fn remote(doc: &Doc) -> Doc {
        let update = doc
            .transact()
            .encode_state_as_update_v1(&yrs::StateVector::default());
        let server = Doc::new();
        server
            .transact_mut()
            .apply_update(Update::decode_v1(&update).unwrap())
            .unwrap();
        server
    }

    #[test]
    fn roots_of_every_kind_are_inferred() {
        let doc = Doc::new();
        {
            let text = doc.get_or_insert_text("t");
            let map = doc.get_or_insert_map("m");
            let arr = doc.get_or_insert_array("a");
            let xml = doc.get_or_insert_xml_fragment("x");
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, 0, "hello");
            map.insert(&mut txn, "k", 1i64);
            map.insert(&mut txn, "nested", yrs::MapPrelim::default());
            arr.push_back(&mut txn, "v");
            arr.push_back(&mut txn, true);
            let p = xml.push_back(&mut txn, yrs::XmlElementPrelim::empty("p"));
            p.push_back(&mut txn, yrs::XmlTextPrelim::new("hi"));
            let _ = txn.get_or_insert_map("unused");
        }
        let json = doc_to_json(&remote(&doc)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "t": "hello",
                "m": {"k": 1, "nested": {}},
                "a": ["v", true],
                "x": "<p>hi</p>",
            })
        );
        assert_eq!(
            doc.get_or_insert_text("t").get_string(&doc.transact()),
            "hello"
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let doc = Doc::new();
        {
            let root = doc.get_or_insert_map("m");
            let mut txn = doc.transact_mut();
            let mut cur = root.insert(&mut txn, "c", yrs::MapPrelim::default());
            for _ in 0..(MAX_JSON_DEPTH + 10) {
                cur = cur.insert(&mut txn, "c", yrs::MapPrelim::default());
            }
        }
        assert_eq!(doc_to_json(&remote(&doc)), Err(TooDeep));
    }
}
