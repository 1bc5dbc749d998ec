//! Keyset pagination: each list has a fixed order and the cursor is the position after the last
//! item, opaque to clients (base64 of the sort key).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Datelike, Utc};
use uuid::Uuid;

use crate::domain::DomainError;

/// The largest page a client may ask for.
pub const MAX_PAGE_SIZE: u32 = 200;
/// The page size when the client does not say.
pub const DEFAULT_PAGE_SIZE: u32 = 50;

/// A page request after validation: how many items, and after which position.
#[derive(Debug, Clone)]
pub struct PageRequest {
    /// The decoded cursor: the sort key of the last item of the previous page.
    after: Option<String>,
    pub size: u32,
}

impl PageRequest {
    /// Validates a client's `limit` and `cursor`.
    pub fn new(limit: Option<u32>, cursor: Option<&str>) -> Result<Self, DomainError> {
        let size = limit.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(1..=MAX_PAGE_SIZE).contains(&size) {
            return Err(DomainError::invalid(
                "limit",
                format!("must be between 1 and {MAX_PAGE_SIZE}"),
            ));
        }
        let after = cursor
            .map(|text| {
                // Every cursor this API issues is non-empty, so an empty one is refused too.
                Some(text)
                    .filter(|text| !text.is_empty())
                    .and_then(|text| URL_SAFE_NO_PAD.decode(text).ok())
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .ok_or_else(invalid_cursor)
            })
            .transpose()?;
        Ok(Self { after, size })
    }

    /// The first page of `size` items.
    pub fn first(size: u32) -> Self {
        Self {
            after: None,
            size: size.clamp(1, MAX_PAGE_SIZE),
        }
    }

    /// Rows to fetch: one more than the page, to learn whether another page follows.
    pub fn fetch_limit(&self) -> i64 {
        i64::from(self.size) + 1
    }

    /// For lists ordered newest first by `(time, id)`: the position to continue below. Without a
    /// cursor, a position after everything.
    pub fn before_time_and_id(&self) -> Result<(DateTime<Utc>, Uuid), DomainError> {
        let Some(after) = &self.after else {
            return Ok((latest_storable_time(), Uuid::max()));
        };
        let (micros, id) = after.split_once('|').ok_or_else(invalid_cursor)?;
        Ok((
            parse_cursor_time(micros)?,
            id.parse().map_err(|_| invalid_cursor())?,
        ))
    }

    /// For lists ordered oldest first by time alone: the position to continue after, if any.
    pub fn after_time(&self) -> Result<Option<DateTime<Utc>>, DomainError> {
        self.after.as_deref().map(parse_cursor_time).transpose()
    }

    /// For lists ordered by a unique name: the name to continue after ("" before all names).
    pub fn after_name(&self) -> &str {
        self.after.as_deref().unwrap_or("")
    }

    /// Splits `rows` (fetched with [`Self::fetch_limit`]) into the page and the next cursor, built
    /// from the last item's sort key (see the `*_key` functions).
    pub fn finish<T>(&self, mut rows: Vec<T>, sort_key: impl Fn(&T) -> String) -> Page<T> {
        let more = rows.len() > self.size as usize;
        rows.truncate(self.size as usize);
        let next_cursor = match rows.last() {
            Some(last) if more => Some(URL_SAFE_NO_PAD.encode(sort_key(last))),
            _ => None,
        };
        Page {
            items: rows,
            next_cursor,
        }
    }
}

/// The sort key of an item in a list ordered by `(time, id)`.
pub fn time_and_id_key(at: DateTime<Utc>, id: Uuid) -> String {
    format!("{}|{id}", at.timestamp_micros())
}

/// The sort key of an item in a list ordered by time alone.
pub fn time_key(at: DateTime<Utc>) -> String {
    at.timestamp_micros().to_string()
}

/// A cursor's time, refused unless PostgreSQL can store it (years 1 to 9999 here), so a forged
/// cursor is a client error and never reaches the database.
fn parse_cursor_time(micros: &str) -> Result<DateTime<Utc>, DomainError> {
    let at = micros
        .parse()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(invalid_cursor)?;
    if !(1..=9999).contains(&at.year()) {
        return Err(invalid_cursor());
    }
    Ok(at)
}

/// Later than any row's time, and still a value PostgreSQL accepts.
fn latest_storable_time() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_300_799, 0).unwrap_or_default() // 9999-12-31T23:59:59Z
}

fn invalid_cursor() -> DomainError {
    DomainError::invalid(
        "cursor",
        "not a cursor returned by this API; start again without one",
    )
}

/// One page of results and where the next one starts.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor_for(key: &str) -> String {
        URL_SAFE_NO_PAD.encode(key)
    }

    #[test]
    fn a_time_and_id_cursor_survives_a_round_trip() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        let id = Uuid::now_v7();
        let cursor = cursor_for(&time_and_id_key(at, id));
        let page = PageRequest::new(None, Some(&cursor)).unwrap();
        assert_eq!(page.before_time_and_id().unwrap(), (at, id));
    }

    #[test]
    fn garbage_is_not_a_cursor() {
        let check = |text: &str| {
            let parsed =
                PageRequest::new(None, Some(text)).and_then(|page| page.before_time_and_id());
            assert!(parsed.is_err(), "{text:?} was accepted");
        };
        check("%%%");
        check(&cursor_for("abc"));
        check(&cursor_for("12|not-a-uuid"));
        check(&cursor_for("x|00000000-0000-0000-0000-000000000000"));
        check(&URL_SAFE_NO_PAD.encode([0xff, 0xfe]));
        check(&cursor_for(
            "-8000000000000000000|00000000-0000-0000-0000-000000000000",
        ));
        check(&cursor_for(
            "253402300800000000|00000000-0000-0000-0000-000000000000",
        ));
    }

    #[test]
    fn page_sizes_outside_the_bounds_are_refused() {
        assert!(PageRequest::new(Some(0), None).is_err());
        assert!(PageRequest::new(Some(MAX_PAGE_SIZE + 1), None).is_err());
        assert_eq!(
            PageRequest::new(None, None).unwrap().size,
            DEFAULT_PAGE_SIZE
        );
    }

    #[test]
    fn finishing_a_page_detects_the_next_one() {
        let request = PageRequest::new(Some(2), None).unwrap();
        let page = request.finish(vec![3, 2, 1], |n: &i32| n.to_string());
        assert_eq!(page.items, vec![3, 2]);
        assert_eq!(page.next_cursor, Some(cursor_for("2")));
        assert!(
            request
                .finish(vec![3, 2], |n: &i32| n.to_string())
                .next_cursor
                .is_none()
        );
    }
}
