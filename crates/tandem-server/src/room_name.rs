//! Room names in URL paths: percent-decoded, valid UTF-8, 1 to 512 bytes. Shared by the
//! WebSocket route (`routes.rs`) and the HTTP API (`api/`); must never import either.

use tandem_store::MAX_ROOM_NAME_BYTES;

/// Room name from a request path: everything after the first `/`, percent-decoded, valid UTF-8,
/// 1 to 512 bytes.
pub fn room_from_path(path: &str) -> Result<String, String> {
    let raw = path.strip_prefix('/').unwrap_or(path);
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    let name = String::from_utf8(bytes).map_err(|_| "room name is not valid utf-8".to_owned())?;
    if name.is_empty() {
        return Err("missing room name in the url path".into());
    }
    if name.len() > MAX_ROOM_NAME_BYTES {
        return Err(format!(
            "room name is {} bytes; the limit is {MAX_ROOM_NAME_BYTES}",
            name.len()
        ));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::room_from_path;

    #[test]
    fn room_names_are_percent_decoded_and_bounded() {
        assert_eq!(room_from_path("/my-room").as_deref(), Ok("my-room"));
        assert_eq!(room_from_path("/a%20b%2Fc").as_deref(), Ok("a b/c"));
        assert_eq!(room_from_path("/caf%C3%A9").as_deref(), Ok("café"));
        assert!(room_from_path("/").is_err());
        assert!(room_from_path("/%FF").is_err());
        assert!(room_from_path(&format!("/{}", "x".repeat(513))).is_err());
        assert!(room_from_path(&format!("/{}", "x".repeat(512))).is_ok());
    }
}
