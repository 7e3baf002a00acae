//! `api::query`: the request's path and query string, decoded once into
//! [`Params`] and read from there into each route's typed query struct
//! (`KvQuery`, `WatchQuery`, ...), with a 400 naming the parameter that is
//! wrong. Parameters a route does not know are ignored, as Consul does
//! (clients send `dc`, `token`, `stale` and such).

use std::collections::HashMap;

use axum::http::{StatusCode, Uri};

use super::error::{error, key_error, ApiError};
use super::{WAIT_MS_DEFAULT, WAIT_MS_MAX};
use crate::core::types::KeyError;
use crate::sync::WriteAck;

/// A query string, decoded: later repeats win, `+` is a space.
#[derive(Debug, Default)]
pub(super) struct Params(HashMap<String, String>);

impl Params {
    pub(super) fn parse(uri: &Uri) -> Result<Params, ApiError> {
        let mut out = HashMap::new();
        for pair in uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty())
        {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_decode(&s.replace('+', " "))
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        error(
                            StatusCode::BAD_REQUEST,
                            format!("query parameter {k:?} is not valid percent-encoded UTF-8"),
                        )
                    })
            };
            out.insert(decode(k)?, decode(v)?);
        }
        Ok(Params(out))
    }

    /// A flag: present means on, whatever its value (as in Consul).
    pub(super) fn flag(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    pub(super) fn text(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub(super) fn number(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.0.get(name) {
            None => Ok(None),
            Some(v) => v.parse::<u64>().map(Some).map_err(|_| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("{name} must be an unsigned integer, got {v:?}"),
                )
            }),
        }
    }

    /// `?ack=quorum|local`: when the write is acknowledged (`None`: the
    /// node's `write_ack`).
    pub(super) fn ack(&self) -> Result<Option<WriteAck>, ApiError> {
        match self.text("ack") {
            None => Ok(None),
            Some("quorum") => Ok(Some(WriteAck::Quorum)),
            Some("local") => Ok(Some(WriteAck::Local)),
            Some(other) => Err(error(
                StatusCode::BAD_REQUEST,
                format!("ack must be quorum or local, got {other:?}"),
            )),
        }
    }

    /// `?consistent`: the read waits for a barrier across regions
    /// (`?stale`, the default, answers at once). Both is an error, as in Consul.
    pub(super) fn consistent(&self) -> Result<bool, ApiError> {
        let consistent = self.flag("consistent");
        if consistent && self.flag("stale") {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "Cannot specify ?stale with ?consistent, conflicting semantics.",
            ));
        }
        Ok(consistent)
    }

    /// `?wait=`: how long a blocking query waits, at most [`WAIT_MS_MAX`]
    /// ([`WAIT_MS_DEFAULT`] when absent).
    pub(super) fn wait_ms(&self) -> Result<u64, ApiError> {
        let ms = match self.text("wait") {
            None => WAIT_MS_DEFAULT,
            Some(w) => duration_ms(w).ok_or_else(|| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("Invalid wait time: {w:?} (a duration with a unit, such as 30s, 5m or 250ms)"),
                )
            })?,
        };
        Ok(ms.min(WAIT_MS_MAX))
    }
}

/// Decodes `%XX` escapes; `None` on a malformed escape.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Parses a Go duration as Consul takes it (`10s`, `5m`, `1m30s`, `1.5s`,
/// `250ms`) into milliseconds, rounded down. A number without a unit is
/// refused, as Consul refuses it (`0` alone is a duration in Go).
fn duration_ms(s: &str) -> Option<u64> {
    if s == "0" {
        return Some(0);
    }
    let mut rest = s;
    let mut total_ns: f64 = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (n, tail) = rest.split_at(split);
        let n: f64 = n.parse().ok()?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let ns = match unit {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3_600e9,
            _ => return None,
        };
        total_ns += n * ns;
        rest = tail;
    }
    let ms = total_ns / 1e6;
    (ms.is_finite() && ms < u64::MAX as f64).then_some(ms as u64)
}

/// The path after `prefix`, cleaned as Consul's HTTP layer cleans paths
/// (runs of `/` are one `/`, so `/v1/kv//app/x` names `app/x`),
/// percent-decoded and checked as UTF-8. A name that still begins with
/// `/` (an escaped `%2F`) is refused, as Consul refuses it.
pub(super) fn path_rest(uri: &Uri, prefix: &str) -> Result<String, ApiError> {
    let raw = uri.path().strip_prefix(prefix).unwrap_or("");
    let mut cleaned = String::with_capacity(raw.len());
    for c in raw.chars() {
        if !(c == '/' && (cleaned.is_empty() || cleaned.ends_with('/'))) {
            cleaned.push(c);
        }
    }
    let bytes = percent_decode(&cleaned).ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            format!("the path {:?} has a malformed %-escape", uri.path()),
        )
    })?;
    let name = String::from_utf8(bytes).map_err(|_| key_error(KeyError::NotUtf8))?;
    if name.starts_with('/') {
        return Err(error(StatusCode::BAD_REQUEST, LEADING_SLASH));
    }
    reserved(&name)?;
    Ok(name)
}

/// Refuses a key or prefix in Meridian's own namespace (ACL state):
/// clients neither read nor write it through the KV API.
pub(super) fn reserved(name: &str) -> Result<(), ApiError> {
    if crate::core::acl::records::is_reserved(name) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "keys beginning with \\u0001meridian/ are reserved for Meridian's own state",
        ));
    }
    Ok(())
}

/// Consul's answer to a key that begins with `/`.
pub(super) const LEADING_SLASH: &str = "Invalid key name, leading '/' not allowed";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_consul() {
        assert_eq!(duration_ms("30s"), Some(30_000));
        assert_eq!(duration_ms("5m"), Some(300_000));
        assert_eq!(duration_ms("250ms"), Some(250));
        assert_eq!(duration_ms("2"), None);
        assert_eq!(duration_ms("0"), Some(0));
        assert_eq!(duration_ms("1h"), Some(3_600_000));
        assert_eq!(duration_ms("1m30s"), Some(90_000));
        assert_eq!(duration_ms("1.5s"), Some(1_500));
        assert_eq!(duration_ms("s"), None);
        assert_eq!(duration_ms(""), None);
        assert_eq!(duration_ms("10x"), None);
        assert_eq!(duration_ms("5"), None);
    }

    #[test]
    fn paths_are_cleaned_and_a_leading_slash_is_refused() {
        let rest = |p: &str| path_rest(&p.parse::<Uri>().unwrap(), "/v1/kv");
        assert_eq!(rest("/v1/kv/app/x").unwrap(), "app/x");
        assert_eq!(rest("/v1/kv//app//x").unwrap(), "app/x");
        assert_eq!(rest("/v1/kv///app/").unwrap(), "app/");
        assert_eq!(rest("/v1/kv").unwrap(), "");
        assert_eq!(rest("/v1/kv/").unwrap(), "");
        let e = rest("/v1/kv/%2Fapp").unwrap_err();
        assert_eq!(e.code, StatusCode::BAD_REQUEST);
        assert_eq!(e.message, LEADING_SLASH);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%20c").as_deref(), Some(&b"a/b c"[..]));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%+1"), None);
        assert_eq!(percent_decode("%ff").as_deref(), Some(&[0xff][..]));
    }

    #[test]
    fn parameters_decode_once_and_later_repeats_win() {
        let uri: Uri = "/v1/kv/a?recurse&cas=3&x=1&x=2&sep=%2F+".parse().unwrap();
        let p = Params::parse(&uri).unwrap();
        assert!(p.flag("recurse"));
        assert!(!p.flag("keys"));
        assert_eq!(p.number("cas").unwrap(), Some(3));
        assert_eq!(p.text("x"), Some("2"));
        assert_eq!(p.text("sep"), Some("/ "));
        let bad: Uri = "/v1/kv/a?cas=x".parse().unwrap();
        let e = Params::parse(&bad).unwrap().number("cas").unwrap_err();
        assert_eq!(e.code, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("cas"), "{}", e.message);
    }
}
