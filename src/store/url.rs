//! The state store URL grammar, one for every option that names a store
//! (SPEC Edge rules, "Shared state"): `file:DIR` or
//! `redis[s]://[user:pass@]host[:port][/db][#NAME]`. Pure: no I/O.
//!
//! A password never reaches an output: [`RedisUrl`]'s `Debug` and
//! [`RedisUrl::masked`] print `***` in its place, parse errors never
//! quote it, and text a user typed goes through the crate's one masker,
//! [`crate::parse::mask_url`], before it is echoed in a usage error.

use std::fmt;
use std::path::PathBuf;

/// Where shared state lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreUrl {
    /// `file:DIR`: one machine.
    File(PathBuf),
    /// `redis://…`: a fleet.
    Redis(RedisUrl),
}

impl StoreUrl {
    /// The URL as it may be shown: passwords masked.
    pub fn masked(&self) -> String {
        match self {
            StoreUrl::File(dir) => format!("file:{}", dir.display()),
            StoreUrl::Redis(r) => r.masked(),
        }
    }
}

/// `redis[s]://[user:pass@]host[:port][/db][#NAME]`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// `rediss://`: TLS.
    pub tls: bool,
    pub user: Option<String>,
    pub password: Option<String>,
    /// A name or an IP address (IPv6 without its brackets).
    pub host: String,
    /// 6379 unless given.
    pub port: u16,
    /// 0 unless given.
    pub db: u32,
    /// `#NAME`: a queue's name (only `--queue`, `--drain`, `--list` take one).
    pub name: Option<String>,
}

impl RedisUrl {
    /// The URL with the password replaced by `***`.
    pub fn masked(&self) -> String {
        let mut out = String::from(if self.tls { "rediss://" } else { "redis://" });
        match (&self.user, &self.password) {
            (Some(u), Some(_)) => out.push_str(&format!("{u}:***@")),
            (None, Some(_)) => out.push_str(":***@"),
            // Not produced by `parse` (a user needs a password); masked anyway.
            (Some(_), None) => out.push_str("***@"),
            (None, None) => {}
        }
        if self.host.contains(':') {
            out.push_str(&format!("[{}]", self.host));
        } else {
            out.push_str(&self.host);
        }
        out.push_str(&format!(":{}/{}", self.port, self.db));
        if let Some(name) = &self.name {
            out.push_str(&format!("#{name}"));
        }
        out
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

const HINT: &str = "expected file:DIR or redis[s]://[user:pass@]host[:port][/db]";

/// Parses a store URL. The error reason never contains the password.
pub fn parse(text: &str) -> Result<StoreUrl, String> {
    if let Some(rest) = text.strip_prefix("file:") {
        return parse_file(rest).map(StoreUrl::File);
    }
    let (tls, rest) = if let Some(rest) = text.strip_prefix("redis://") {
        (false, rest)
    } else if let Some(rest) = text.strip_prefix("rediss://") {
        (true, rest)
    } else {
        return Err(format!("unknown kind of store; {HINT}"));
    };
    parse_redis(tls, rest).map(StoreUrl::Redis)
}

fn parse_file(rest: &str) -> Result<PathBuf, String> {
    // `file:///abs/path` as well as `file:/abs/path` and `file:relative`.
    let path = match rest.strip_prefix("//") {
        Some(p) if p.starts_with('/') => p,
        Some(_) => return Err("a file store is on this machine: write file:/path/to/dir".to_string()),
        None => rest,
    };
    if path.is_empty() {
        return Err("the directory is missing, e.g. file:/var/lib/retry".to_string());
    }
    Ok(PathBuf::from(path))
}

fn parse_redis(tls: bool, rest: &str) -> Result<RedisUrl, String> {
    // The user info ends at the last `@` (a name after `#` has none), so
    // a password may hold a raw `/`, `#`, `?` or `@` (base64 makes `/`);
    // it is split off first and never quoted in an error.
    let (userinfo, rest) = match rest.rfind('@') {
        Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
        None => (None, rest),
    };
    let (rest, name) = match rest.split_once('#') {
        Some((r, n)) => {
            if !super::valid_name(n) {
                return Err(format!("'#{n}' is not a valid name: {}", super::NAME_RULE));
            }
            (r, Some(n.to_string()))
        }
        None => (rest, None),
    };
    if rest.contains('?') {
        return Err(format!("query parameters are not supported; {HINT}"));
    }
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(info) => {
            // `user@` alone is not in the grammar: AUTH needs a password,
            // and redis-cli reads `redis://secret@host` as a password, so
            // it is refused (and masked in the message) rather than guessed.
            let Some((u, p)) = info.split_once(':') else {
                return Err("a user name needs a password: write redis://user:pass@host, \
                            or redis://:pass@host for the default user"
                    .to_string());
            };
            let user = if u.is_empty() {
                None
            } else {
                Some(percent_decode(u).ok_or_else(|| "bad %-escape in the user name".to_string())?)
            };
            let password = percent_decode(p).ok_or_else(|| "bad %-escape in the password".to_string())?;
            (user, Some(password))
        }
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or_else(|| "unclosed '[' in the host".to_string())?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| format!("unexpected '{p}' after the host"))?),
        };
        (host, port)
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(format!("the host is missing; {HINT}"));
    }
    if !host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_:%".contains(&b)) {
        return Err(format!("'{host}' is not a host name or address"));
    }
    let port = match port {
        None => 6379,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(format!("'{p}' is not a port (1-65535)")),
        },
    };
    let db = match path {
        None | Some("") => 0,
        Some(d) => match d.parse::<u32>() {
            Ok(n) if d.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(format!("'/{d}' is not a database number")),
        },
    };
    Ok(RedisUrl { tls, user, password, host: host.to_string(), port, db, name })
}

/// `%XX` escapes decoded; `None` for a bad escape or invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis(text: &str) -> RedisUrl {
        match parse(text) {
            Ok(StoreUrl::Redis(r)) => r,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn file_urls() {
        assert_eq!(parse("file:/var/lib/retry"), Ok(StoreUrl::File("/var/lib/retry".into())));
        assert_eq!(parse("file:///var/lib/retry"), Ok(StoreUrl::File("/var/lib/retry".into())));
        assert_eq!(parse("file:state"), Ok(StoreUrl::File("state".into())));
        for bad in ["file:", "file://host/x", "/var/lib/retry", "", "ftp://x"] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn redis_urls_in_every_form() {
        let r = redis("redis://localhost");
        assert_eq!((r.tls, r.host.as_str(), r.port, r.db), (false, "localhost", 6379, 0));
        assert_eq!((r.user, r.password, r.name), (None, None, None));
        let r = redis("rediss://app:s3cr%40t@cache.internal:6380/2#jobs");
        assert!(r.tls);
        assert_eq!(r.user.as_deref(), Some("app"));
        assert_eq!(r.password.as_deref(), Some("s3cr@t"));
        assert_eq!(
            (r.host.as_str(), r.port, r.db, r.name.as_deref()),
            ("cache.internal", 6380, 2, Some("jobs"))
        );
        let r = redis("redis://:pw@[::1]:7000/");
        assert_eq!((r.user, r.password.as_deref(), r.host.as_str(), r.port), (None, Some("pw"), "::1", 7000));
        let r = redis("redis://user:p:w@h");
        assert_eq!(r.password.as_deref(), Some("p:w"));
        // Raw `/`, `#`, `?`, `@` in a password: the last `@` ends it.
        let r = redis("redis://u:a/b#c?d@e@h:1/2#q");
        assert_eq!(r.password.as_deref(), Some("a/b#c?d@e"));
        assert_eq!((r.host.as_str(), r.port, r.db, r.name.as_deref()), ("h", 1, 2, Some("q")));
    }

    #[test]
    fn redis_urls_rejected_without_quoting_the_password() {
        for bad in [
            "redis://",
            "redis://h:0",
            "redis://h:99999",
            "redis://h:x",
            "redis://h/x",
            "redis://h/1?timeout=3",
            "redis://h#",
            "redis://h#a/b",
            "redis://[::1",
            "redis://u:pw@",
            "redis://u:%zz@h",
            "redis://h o",
            "redis://pw@h",
            "redis://u:pw/1#x@h:x",
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(!err.contains("pw") && !err.contains("%zz"), "{bad}: {err}");
        }
    }

    #[test]
    fn passwords_are_masked() {
        let r = redis("redis://app:hunter2@h:1/3#q");
        assert_eq!(r.masked(), "redis://app:***@h:1/3#q");
        assert_eq!(format!("{r:?}"), "redis://app:***@h:1/3#q");
        assert_eq!(redis("redis://[::1]").masked(), "redis://[::1]:6379/0");
    }
}
