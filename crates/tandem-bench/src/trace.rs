//! Editing traces (`bench/traces/*.json.gz`) and their conversion into Yjs updates.

use std::io::Read;
use std::path::Path;

use yrs::{GetString, Text, Transact};

use crate::error::{BenchError, Result};

#[derive(serde::Deserialize)]
struct TraceFile {
    #[serde(rename = "startContent", default)]
    start_content: String,
    #[serde(rename = "endContent")]
    end_content: String,
    txns: Vec<TxnFile>,
}

#[derive(serde::Deserialize)]
struct TxnFile {
    patches: Vec<(usize, usize, String)>,
}

/// A sequential editing trace: apply each transaction's patches `(pos, deleted, inserted)` in
/// order (positions in Unicode code points) to `start` and get `end`.
#[derive(Debug, Clone)]
pub struct Trace {
    pub start: String,
    pub end: String,
    pub txns: Vec<Vec<(usize, usize, String)>>,
}

impl Trace {
    /// Reads a trace, gunzipping files whose name ends in `.gz`.
    pub fn load(path: &Path) -> Result<Trace> {
        let name = path.display().to_string();
        let raw = std::fs::read(path).map_err(|e| BenchError::Io(format!("reading {name}"), e))?;
        let json = if name.ends_with(".gz") {
            let mut s = Vec::new();
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_end(&mut s)
                .map_err(|e| BenchError::Io(format!("gunzipping {name}"), e))?;
            s
        } else {
            raw
        };
        Trace::parse(&json).map_err(|e| BenchError::Trace(name, e))
    }

    pub fn parse(json: &[u8]) -> std::result::Result<Trace, String> {
        let f: TraceFile = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        Ok(Trace {
            start: f.start_content,
            end: f.end_content,
            txns: f.txns.into_iter().map(|t| t.patches).collect(),
        })
    }

    /// The first `n` transactions only; `end` becomes the text they produce.
    pub fn truncated(&self, n: usize) -> Trace {
        let txns: Vec<_> = self.txns.iter().take(n).cloned().collect();
        let mut text: Vec<char> = self.start.chars().collect();
        for patches in &txns {
            for (pos, del, ins) in patches {
                let pos = (*pos).min(text.len());
                let end = (pos + del).min(text.len());
                text.splice(pos..end, ins.chars());
            }
        }
        Trace {
            start: self.start.clone(),
            end: text.into_iter().collect(),
            txns,
        }
    }
}

/// Turns a trace into one Yjs v1 update per transaction, made by a real yrs document with
/// `client_id` editing the root text `text`. Returns the updates and the document that made them,
/// whose text is checked against the trace's `end`.
pub fn to_updates(trace: &Trace, client_id: u64) -> Result<(Vec<Vec<u8>>, yrs::Doc)> {
    let doc = yrs::Doc::with_client_id(client_id);
    let text = doc.get_or_insert_text("text");
    let ascii = trace.start.is_ascii()
        && trace
            .txns
            .iter()
            .all(|t| t.iter().all(|(_, _, s)| s.is_ascii()));
    // Non-ASCII traces: positions are code points, yrs offsets here are UTF-8 bytes; a mirror of
    // the text maps one to the other.
    let mut mirror = if ascii {
        None
    } else {
        Some(trace.start.clone())
    };
    let byte_at = |m: &str, cp: usize| m.char_indices().nth(cp).map_or(m.len(), |(i, _)| i);
    let mut out = Vec::with_capacity(trace.txns.len() + 1);
    if !trace.start.is_empty() {
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 0, &trace.start);
        out.push(txn.encode_update_v1());
    }
    for patches in &trace.txns {
        let mut txn = doc.transact_mut();
        for (pos, del, ins) in patches {
            let (at, del_bytes) = match &mut mirror {
                None => (*pos as u32, *del as u32),
                Some(m) => {
                    let a = byte_at(m, *pos);
                    let b = byte_at(m, pos + del);
                    m.replace_range(a..b, ins);
                    (a as u32, (b - a) as u32)
                }
            };
            let len = text.len(&txn);
            if at > len || at + del_bytes > len {
                return Err(BenchError::Trace(
                    "patch".into(),
                    format!("position {pos} (+{del}) beyond text length {len}"),
                ));
            }
            if del_bytes > 0 {
                text.remove_range(&mut txn, at, del_bytes);
            }
            if !ins.is_empty() {
                text.insert(&mut txn, at, ins);
            }
        }
        out.push(txn.encode_update_v1());
    }
    let got = text.get_string(&doc.transact());
    if got != trace.end {
        return Err(BenchError::Trace(
            "replay".into(),
            format!(
                "replaying gives {} chars, endContent has {}",
                got.chars().count(),
                trace.end.chars().count()
            ),
        ));
    }
    Ok((out, doc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::updates::decoder::Decode;

    const SMALL: &str = r#"{"startContent":"","endContent":"hé world!",
        "txns":[{"patches":[[0,0,"hello"]]},{"patches":[[1,4,"é"]]},
                {"patches":[[2,0," world"]]},{"patches":[[8,0,"!"]]}]}"#;

    #[test]
    fn replays_small_trace_with_non_ascii() {
        let t = Trace::parse(SMALL.as_bytes()).expect("parse");
        let (updates, _) = to_updates(&t, 42).expect("updates");
        assert_eq!(updates.len(), 4);
        let doc = yrs::Doc::new();
        let text = doc.get_or_insert_text("text");
        for u in &updates {
            let u = yrs::Update::decode_v1(u).expect("decode");
            doc.transact_mut().apply_update(u).expect("apply");
        }
        assert_eq!(text.get_string(&doc.transact()), "hé world!");
    }

    #[test]
    fn truncation_recomputes_end() {
        let t = Trace::parse(SMALL.as_bytes()).expect("parse").truncated(2);
        assert_eq!(t.end, "hé");
        assert_eq!(to_updates(&t, 1).expect("updates").0.len(), 2);
    }

    #[test]
    fn wrong_end_content_is_an_error() {
        let mut t = Trace::parse(SMALL.as_bytes()).expect("parse");
        t.end = "nope".into();
        assert!(to_updates(&t, 1).is_err());
    }
}
