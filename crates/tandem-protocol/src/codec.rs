//! lib0 primitives: unsigned/signed varints, length-prefixed strings and buffers.
//!
//! [`Reader`] is a cursor over a borrowed slice; it never allocates, and a length prefix that
//! points past the end of the input is an error, not a reservation.

use thiserror::Error;

/// Why a byte sequence is not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("unexpected end of input while reading {0}")]
    UnexpectedEnd(&'static str),
    #[error("variable-length integer too long or too large while reading {0}")]
    VarIntOverflow(&'static str),
    #[error("invalid utf-8 in {0}")]
    InvalidUtf8(&'static str),
    #[error("unknown message type {0}")]
    UnknownMessageType(u64),
    #[error("unknown sync message type {0}")]
    UnknownSyncType(u64),
    #[error("unknown auth message type {0}")]
    UnknownAuthType(u64),
    #[error("empty frame")]
    EmptyFrame,
    #[error("{what} value {value} exceeds the limit {limit}")]
    TooLarge {
        what: &'static str,
        value: u64,
        limit: u64,
    },
    #[error("invalid awareness state json: {0}")]
    InvalidJson(String),
    #[error("invalid update: {0}")]
    InvalidUpdate(&'static str),
    #[error("{0} nested deeper than {1} levels")]
    TooDeep(&'static str, usize),
    #[error("{0} trailing bytes after {1}")]
    TrailingBytes(usize, &'static str),
}

/// A cursor over untrusted bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn read_u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(DecodeError::UnexpectedEnd(what))?;
        self.pos += 1;
        Ok(b)
    }

    pub fn read_exact(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if len > self.remaining() {
            return Err(DecodeError::UnexpectedEnd(what));
        }
        let out = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(out)
    }

    /// lib0 `readVarUint`: 7 bits per byte, little-endian, high bit = continue. Values above
    /// `u64::MAX` or encodings longer than 10 bytes are rejected.
    pub fn read_var_u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut value: u64 = 0;
        let mut shift = 0u32;
        loop {
            let byte = self.read_u8(what)?;
            let low = u64::from(byte & 0x7f);
            if shift >= 64 || (shift == 63 && low > 1) {
                return Err(DecodeError::VarIntOverflow(what));
            }
            value |= low << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
        }
    }

    /// A varuint that must not exceed `limit`.
    pub fn read_var_bounded(&mut self, limit: u64, what: &'static str) -> Result<u64, DecodeError> {
        let value = self.read_var_u64(what)?;
        if value > limit {
            return Err(DecodeError::TooLarge { what, value, limit });
        }
        Ok(value)
    }

    /// A count of following items, each at least `min_item_bytes` long: bounded by the input.
    pub fn read_count(
        &mut self,
        min_item_bytes: usize,
        what: &'static str,
    ) -> Result<usize, DecodeError> {
        let limit = (self.remaining() / min_item_bytes.max(1)) as u64;
        let n = self.read_var_u64(what)?;
        if n > limit {
            return Err(DecodeError::UnexpectedEnd(what));
        }
        Ok(n as usize)
    }

    /// lib0 `readVarInt` (sign in bit 6 of the first byte). Only skipped here, never interpreted.
    pub fn skip_var_i64(&mut self, what: &'static str) -> Result<(), DecodeError> {
        for _ in 0..10 {
            if self.read_u8(what)? & 0x80 == 0 {
                return Ok(());
            }
        }
        Err(DecodeError::VarIntOverflow(what))
    }

    /// lib0 `readVarUint8Array`.
    pub fn read_buf(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = self.read_var_u64(what)?;
        let len = usize::try_from(len).map_err(|_| DecodeError::UnexpectedEnd(what))?;
        self.read_exact(len, what)
    }

    /// lib0 `readVarString`.
    pub fn read_str(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        let bytes = self.read_buf(what)?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::InvalidUtf8(what))
    }
}

/// Appends lib0 encodings to a `Vec<u8>`.
pub fn write_var_u64(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

pub fn write_buf(out: &mut Vec<u8>, bytes: &[u8]) {
    write_var_u64(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

pub fn write_str(out: &mut Vec<u8>, s: &str) {
    write_buf(out, s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip() {
        for v in [0u64, 1, 127, 128, 300, 1 << 32, (1 << 53) - 1, u64::MAX] {
            let mut out = Vec::new();
            write_var_u64(&mut out, v);
            let mut r = Reader::new(&out);
            assert_eq!(r.read_var_u64("v").expect("decodes"), v);
            assert!(r.is_empty());
        }
    }

    #[test]
    fn varint_overflow_is_an_error() {
        let bytes = [0xffu8; 11];
        assert!(matches!(
            Reader::new(&bytes).read_var_u64("v"),
            Err(DecodeError::VarIntOverflow(_))
        ));
        let truncated = [0x80u8];
        assert!(matches!(
            Reader::new(&truncated).read_var_u64("v"),
            Err(DecodeError::UnexpectedEnd(_))
        ));
    }

    #[test]
    fn buffer_length_past_end_is_an_error() {
        let mut out = Vec::new();
        write_var_u64(&mut out, 1 << 40);
        out.push(1);
        assert!(Reader::new(&out).read_buf("b").is_err());
    }

    #[test]
    fn count_is_bounded_by_remaining_input() {
        let mut out = Vec::new();
        write_var_u64(&mut out, 5);
        out.extend_from_slice(&[0, 0]);
        assert!(Reader::new(&out).read_count(1, "n").is_err());
    }
}
