//! `coldload`: store large Yjs documents, restart the server, and time a fresh client from
//! connect to holding the full, verified text. The same run times raw yrs decode + apply +
//! encode of each document in-process, the floor any yrs-based server works against.

use std::time::Instant;

use tandem_protocol::encode_update;
use yrs::updates::decoder::Decode;
use yrs::{GetString, ReadTxn, StateVector, Transact};

use crate::ingest::fetch_text;
use crate::server::ServerCtl;
use crate::{BenchError, Ctx, Result};

#[derive(clap::Args, Debug, Clone)]
pub struct ColdloadArgs {
    /// Yjs documents inside --traces (v2-encoded updates, text in the root text `text`).
    #[arg(long, value_delimiter = ',', default_value = "S1.yjs,C1.yjs,A1.yjs")]
    pub files: Vec<String>,
    /// Timed cold loads per document (one restart each); the median is reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
}

#[derive(Debug, serde::Serialize)]
pub struct DocResult {
    pub file: String,
    pub update_v1_bytes: usize,
    pub text_chars: usize,
    /// Whether every timed load was a cold one (after a restart).
    pub cold: bool,
    pub load_ms: Vec<f64>,
    pub median_ms: f64,
    pub verified: bool,
    /// In-process yrs: decode the v1 update, apply it to a fresh doc, encode it again (median).
    pub raw_yrs_ms: f64,
    pub ratio_to_raw: f64,
}

pub async fn run(
    ctx: &Ctx,
    server: &mut ServerCtl,
    a: &ColdloadArgs,
) -> Result<(String, serde_json::Value)> {
    let prefix = Ctx::room_prefix("cold");
    let mut docs = Vec::new();
    // Store every document first, then restart once per repetition.
    for file in &a.files {
        let path = ctx.traces.join(file);
        let raw = std::fs::read(&path)
            .map_err(|e| BenchError::Io(format!("reading {}", path.display()), e))?;
        let (v1, text) = to_v1(&raw).map_err(|e| BenchError::Trace(file.clone(), e))?;
        let raw_ms = median(&(0..3).map(|_| raw_yrs_ms(&v1)).collect::<Vec<_>>());
        let room = format!("{prefix}-{}", file.replace('.', "-"));
        ctx.endpoint.prepare_room(&room).await?;
        let mut up = ctx.endpoint.connect(&room).await?;
        up.handshake(&yrs::Doc::new(), ctx.timeout).await?;
        up.send(&encode_update(&v1)).await?;
        // Stored once a fresh client sees the whole text.
        let (got, _) = load(ctx, &room, &text).await?;
        if got != text {
            return Err(BenchError::Verify(format!(
                "{file}: upload never became visible"
            )));
        }
        up.close().await;
        docs.push((file.clone(), room, v1.len(), text, raw_ms));
    }
    let cold = server.can_restart();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); docs.len()];
    let mut verified = vec![true; docs.len()];
    for _ in 0..a.repeat.max(1) {
        for (i, (_, room, _, text, _)) in docs.iter().enumerate() {
            // Every timed load is a cold one: the server starts with nothing in memory.
            if cold {
                ctx.restart(server).await?;
            }
            let (got, ms) = load(ctx, room, text).await?;
            times[i].push(ms);
            verified[i] &= got == *text;
        }
    }
    let mut out = Vec::new();
    for (i, (file, _, bytes, text, raw_ms)) in docs.into_iter().enumerate() {
        let med = median(&times[i]);
        out.push(DocResult {
            file,
            update_v1_bytes: bytes,
            text_chars: text.chars().count(),
            cold,
            load_ms: times[i].clone(),
            median_ms: med,
            verified: verified[i],
            raw_yrs_ms: raw_ms,
            ratio_to_raw: med / raw_ms.max(1e-9),
        });
    }
    let mut table = format!(
        "coldload ({}): connect -> full verified text, median of {}\n{:<8} {:>10} {:>9} {:>10} {:>10} {:>8} {:>9}\n",
        if cold {
            "after restart"
        } else {
            "WARM: no --server-cmd, no restart"
        },
        a.repeat.max(1),
        "file",
        "v1 bytes",
        "chars",
        "load ms",
        "raw yrs ms",
        "x raw",
        "verified"
    );
    for d in &out {
        table.push_str(&format!(
            "{:<8} {:>10} {:>9} {:>10.1} {:>10.1} {:>8.2} {:>9}\n",
            d.file,
            d.update_v1_bytes,
            d.text_chars,
            d.median_ms,
            d.raw_yrs_ms,
            d.ratio_to_raw,
            d.verified
        ));
    }
    let json = serde_json::json!({ "workload": "coldload", "cold": cold, "docs": out });
    Ok((table, json))
}

/// Connects a fresh client and times connect → the full expected text applied and read.
async fn load(ctx: &Ctx, room: &str, expected: &str) -> Result<(String, f64)> {
    let (text, _, ms) = fetch_text(ctx, room, expected, 0).await?;
    Ok((text, ms))
}

/// Converts a v2-encoded document into one v1 update of its whole state, and its text.
pub fn to_v1(v2: &[u8]) -> std::result::Result<(Vec<u8>, String), String> {
    let update = yrs::Update::decode_v2(v2).map_err(|e| e.to_string())?;
    let doc = yrs::Doc::new();
    let text = doc.get_or_insert_text("text");
    doc.transact_mut()
        .apply_update(update)
        .map_err(|e| e.to_string())?;
    let txn = doc.transact();
    Ok((
        txn.encode_state_as_update_v1(&StateVector::default()),
        text.get_string(&txn),
    ))
}

/// Milliseconds yrs takes to decode a v1 update, apply it to a fresh document and encode the
/// whole document again.
pub fn raw_yrs_ms(v1: &[u8]) -> f64 {
    let t0 = Instant::now();
    let doc = yrs::Doc::new();
    if let Ok(u) = yrs::Update::decode_v1(v1) {
        let _ = doc.transact_mut().apply_update(u);
    }
    let out = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    std::hint::black_box(out);
    t0.elapsed().as_secs_f64() * 1000.0
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s.get(s.len() / 2).copied().unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::Text;

    #[test]
    fn v2_to_v1_roundtrip_and_median() {
        let doc = yrs::Doc::with_client_id(9);
        let text = doc.get_or_insert_text("text");
        text.insert(&mut doc.transact_mut(), 0, "cold");
        let v2 = doc
            .transact()
            .encode_state_as_update_v2(&StateVector::default());
        let (v1, s) = to_v1(&v2).expect("convert");
        assert_eq!(s, "cold");
        assert!(raw_yrs_ms(&v1) >= 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert!(to_v1(&[1, 2, 3]).is_err());
    }
}
