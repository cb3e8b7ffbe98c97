//! Walking the JSON-like values inside an update (lib0 `Any`, embed and format JSON) without
//! recursion, with a depth limit.

use super::UpdateLimits;
use crate::codec::{DecodeError, Reader};

/// Checks JSON text (embeds, format values): well-formed, and nested no deeper than the `Any`
/// limit. yrs turns it into an `Any` (serde_json, which gives up at 128 levels) that later code
/// walks recursively.
pub(super) fn read_json_str(
    r: &mut Reader<'_>,
    what: &'static str,
    limits: &UpdateLimits,
) -> Result<(), DecodeError> {
    let s = r.read_str(what)?;
    // IgnoredAny checks the syntax without building a value, iteratively and at any depth
    serde_json::from_str::<serde::de::IgnoredAny>(s)
        .map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
    // well-formed, so brackets outside strings give the nesting depth
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for b in s.bytes() {
        if in_str {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_str = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limits.max_any_depth {
                    return Err(DecodeError::TooDeep("json value", limits.max_any_depth));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Skips one lib0 `Any` value iteratively, refusing nesting deeper than `max_depth`.
pub fn skip_any(r: &mut Reader<'_>, max_depth: usize) -> Result<(), DecodeError> {
    // each frame: (values still to read in this container, whether it is a map)
    let mut stack: Vec<(usize, bool)> = Vec::new();
    let mut pending_values = 1usize;
    let mut in_map = false;
    loop {
        if pending_values == 0 {
            match stack.pop() {
                Some((rest, map)) => {
                    pending_values = rest;
                    in_map = map;
                    continue;
                }
                None => return Ok(()),
            }
        }
        pending_values -= 1;
        if in_map {
            r.read_str("any map key")?;
        }
        match r.read_u8("any tag")? {
            127 | 126 | 121 | 120 => {}
            125 => r.skip_var_i64("any integer")?,
            124 => {
                r.read_exact(4, "any float32")?;
            }
            123 | 122 => {
                r.read_exact(8, "any float64/bigint")?;
            }
            119 => {
                r.read_str("any string")?;
            }
            116 => {
                r.read_buf("any buffer")?;
            }
            tag @ (117 | 118) => {
                let is_map = tag == 118;
                let len = r.read_count(if is_map { 2 } else { 1 }, "any container length")?;
                if stack.len() + 1 > max_depth {
                    return Err(DecodeError::TooDeep("any value", max_depth));
                }
                stack.push((pending_values, in_map));
                pending_values = len;
                in_map = is_map;
            }
            _ => return Err(DecodeError::InvalidUpdate("unknown any tag")),
        }
    }
}
