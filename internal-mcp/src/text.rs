//! Text cut to a size in bytes on a character boundary, for whatever crosses a bound: PostgreSQL's
//! messages passed on to a caller, text the audit trail stores.

/// The longest beginning of `text` within `max_bytes` bytes, or `None` when the whole fits.
pub(crate) fn beginning_within(text: &str, max_bytes: usize) -> Option<&str> {
    if text.len() <= max_bytes {
        return None;
    }
    let mut end = max_bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(&text[..end])
}

#[cfg(test)]
mod tests {
    use super::beginning_within;

    #[test]
    fn text_is_cut_on_a_character_boundary() {
        assert_eq!(beginning_within("abc", 3), None);
        assert_eq!(beginning_within("abcd", 3), Some("abc"));
        assert_eq!(beginning_within("\u{20AC}\u{20AC}", 4), Some("\u{20AC}"));
    }
}
