//! On-disk encodings of log records and snapshots. Versioned by a leading byte so the layout
//! can evolve; decoding checks every length against the bytes present.

use crate::StoreError;

const LOG_RECORD_V1: u8 = 1;
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
}
