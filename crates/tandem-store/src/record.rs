//! On-disk encodings of log records and snapshots. Versioned by a leading byte so the layout
//! can evolve; decoding checks every length against the bytes present.

use crate::StoreError;

const LOG_RECORD_V1: u8 = 1;
/// Several consecutive log records in one stored value (one group-commit batch).
const LOG_CHUNK_V1: u8 = 2;
const SNAPSHOT_V1: u8 = 1;

/// One accepted update with its audit data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// When the server accepted it, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Who sent it: a token subject, or `anonymous`.
    pub author: String,
    /// The Yjs v1 update as applied.
    pub update: Vec<u8>,
}

/// A log record with its position in the room's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub seq: u64,
    pub record: LogRecord,
}

/// The full state of a room as one Yjs v1 update, covering log positions `<= seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub seq: u64,
    pub time_ms: u64,
    pub update: Vec<u8>,
}

impl LogRecord {
    pub fn encode(&self) -> Vec<u8> {
        let author = &self.author.as_bytes()[..self.author.len().min(u16::MAX as usize)];
        let mut out = Vec::with_capacity(1 + 8 + 2 + author.len() + self.update.len());
        out.push(LOG_RECORD_V1);
        out.extend_from_slice(&self.time_ms.to_be_bytes());
        out.extend_from_slice(&(author.len() as u16).to_be_bytes());
        out.extend_from_slice(author);
        out.extend_from_slice(&self.update);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let (&version, rest) = bytes.split_first().ok_or("empty log record")?;
        if version != LOG_RECORD_V1 {
            return Err(format!("unknown log record version {version}"));
        }
        let (time, rest) = split(rest, 8, "log record time")?;
        let (alen, rest) = split(rest, 2, "log record author length")?;
        let alen = u16::from_be_bytes([alen[0], alen[1]]) as usize;
        let (author, update) = split(rest, alen, "log record author")?;
        Ok(LogRecord {
            time_ms: be_u64(time),
            author: String::from_utf8(author.to_vec()).map_err(|_| "author is not utf-8")?,
            update: update.to_vec(),
        })
    }
}

impl Snapshot {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(17 + self.update.len());
        out.push(SNAPSHOT_V1);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.time_ms.to_be_bytes());
        out.extend_from_slice(&self.update);
        out
    }

    /// The position a stored snapshot covers, read from its header alone (no copy of the
    /// document).
    pub fn peek_seq(bytes: &[u8]) -> Result<u64, String> {
        match bytes {
            [SNAPSHOT_V1, seq @ ..] if seq.len() >= 16 => Ok(be_u64(&seq[..8])),
            [SNAPSHOT_V1, ..] => Err("truncated snapshot header".into()),
            [version, ..] => Err(format!("unknown snapshot version {version}")),
            [] => Err("empty snapshot".into()),
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let (&version, rest) = bytes.split_first().ok_or("empty snapshot")?;
        if version != SNAPSHOT_V1 {
            return Err(format!("unknown snapshot version {version}"));
        }
        let (seq, rest) = split(rest, 8, "snapshot seq")?;
        let (time, update) = split(rest, 8, "snapshot time")?;
        Ok(Snapshot {
            seq: be_u64(seq),
            time_ms: be_u64(time),
            update: update.to_vec(),
        })
    }
}

/// Encodes records with consecutive positions as one stored value: `2`, count:u32be, then per
/// record its length:u32be and [`LogRecord::encode`] bytes. The first position is in the key.
pub fn encode_log_chunk<'a>(records: impl ExactSizeIterator<Item = &'a LogRecord>) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + records.len() * 48);
    out.push(LOG_CHUNK_V1);
    out.extend_from_slice(&(records.len() as u32).to_be_bytes());
    for r in records {
        let bytes = r.encode();
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

/// How many records a stored log value holds (a single record, as older stores wrote, or a
/// chunk), read from its header alone.
pub fn log_value_len(bytes: &[u8]) -> Result<u64, String> {
    match bytes.first() {
        Some(&LOG_RECORD_V1) => Ok(1),
        Some(&LOG_CHUNK_V1) => {
            let (count, _) = split(&bytes[1..], 4, "log chunk count")?;
            Ok(u64::from(be_u32(count)))
        }
        Some(v) => Err(format!("unknown log record version {v}")),
        None => Err("empty log record".into()),
    }
}

/// Decodes a stored log value whose first record is at position `first_seq`.
pub fn decode_log_value(first_seq: u64, bytes: &[u8]) -> Result<Vec<LogEntry>, String> {
    match bytes.first() {
        Some(&LOG_CHUNK_V1) => {}
        _ => {
            return Ok(vec![LogEntry {
                seq: first_seq,
                record: LogRecord::decode(bytes)?,
            }]);
        }
    }
    let (count, mut rest) = split(&bytes[1..], 4, "log chunk count")?;
    let count = be_u32(count);
    if count == 0 {
        return Err("empty log chunk".into());
    }
    // Each record takes at least 4 + 11 bytes: never trust the count for the allocation.
    let mut out = Vec::with_capacity((count as usize).min(rest.len() / 15));
    for i in 0..u64::from(count) {
        let (len, after) = split(rest, 4, "log chunk record length")?;
        let (record, after) = split(after, be_u32(len) as usize, "log chunk record")?;
        let seq = first_seq
            .checked_add(i)
            .ok_or("log chunk positions overflow")?;
        out.push(LogEntry {
            seq,
            record: LogRecord::decode(record).map_err(|e| format!("record {seq}: {e}"))?,
        });
        rest = after;
    }
    if !rest.is_empty() {
        return Err(format!("{} trailing bytes after log chunk", rest.len()));
    }
    Ok(out)
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

fn split<'a>(b: &'a [u8], n: usize, what: &str) -> Result<(&'a [u8], &'a [u8]), String> {
    if b.len() < n {
        return Err(format!("truncated {what}"));
    }
    Ok(b.split_at(n))
}

pub(crate) fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

pub(crate) fn corrupt(room: &str, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        room: room.to_owned(),
        detail: detail.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_reject_truncation() {
        let r = LogRecord {
            time_ms: 123,
            author: "alice".into(),
            update: vec![1, 2, 3],
        };
        let bytes = r.encode();
        assert_eq!(LogRecord::decode(&bytes), Ok(r));
        for cut in 0..12 {
            assert!(LogRecord::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let s = Snapshot {
            seq: 9,
            time_ms: 5,
            update: vec![0, 0],
        };
        assert_eq!(Snapshot::decode(&s.encode()), Ok(s));
        assert!(Snapshot::decode(&[2, 0]).is_err());
    }

    #[test]
    fn chunks_round_trip_and_reject_damage() {
        let records: Vec<LogRecord> = (0..3u8)
            .map(|n| LogRecord {
                time_ms: u64::from(n),
                author: format!("a{n}"),
                update: vec![n; usize::from(n) + 1],
            })
            .collect();
        let bytes = encode_log_chunk(records.iter());
        assert_eq!(log_value_len(&bytes), Ok(3));
        let entries = decode_log_value(10, &bytes).expect("decode");
        assert_eq!(
            entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [10, 11, 12]
        );
        assert_eq!(
            entries.into_iter().map(|e| e.record).collect::<Vec<_>>(),
            records
        );
        for cut in 0..bytes.len() {
            assert!(decode_log_value(1, &bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_log_value(1, &longer).is_err());
        assert!(decode_log_value(u64::MAX, &bytes).is_err());
        // a lone record (the older layout) is a chunk of one
        let single = records[0].encode();
        assert_eq!(log_value_len(&single), Ok(1));
        assert_eq!(decode_log_value(4, &single).expect("single")[0].seq, 4);
        assert!(log_value_len(&[9]).is_err());
        assert!(decode_log_value(1, &[2, 0, 0, 0, 0]).is_err());
    }
}
