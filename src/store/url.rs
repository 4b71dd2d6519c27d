//! The state store URL grammar, one for every option that names a store
//! (SPEC Edge rules, "Shared state"): `file:DIR`,
//! `redis[s]://[user:pass@]host[:port][,host[:port]...][/db][#NAME]` (one
//! server, or seed nodes of a Redis Cluster) or
//! `redis+sentinel://[user:pass@]host[:port][,...]/MASTER[/db][#NAME]`
//! (the master a set of sentinels names). Pure: no I/O.
//!
//! A password may be left out of the URL (and so out of argv):
//! `RETRY_REDIS_PASSWORD` supplies it when the URL has none, see
//! [`RedisUrl::password`]. An empty password (`redis://user:@host`) means
//! the same as none: it is how a saved job keeps a user name without its
//! password.
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

/// The environment variable that supplies a password the URL leaves out.
pub const PASSWORD_ENV: &str = "RETRY_REDIS_PASSWORD";

/// The default port of a sentinel.
pub const SENTINEL_PORT: u16 = 26379;

/// `redis[s]://…` or `redis+sentinel://…` (see the module doc).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    /// `rediss://`: TLS.
    pub tls: bool,
    pub user: Option<String>,
    /// The password written in the URL (never empty).
    pub password: Option<String>,
    /// The servers named: one server, seed nodes of a Cluster, or the
    /// sentinels. Hosts are names or IP addresses (IPv6 without brackets).
    pub nodes: Vec<(String, u16)>,
    /// `redis+sentinel://…/MASTER`: the master's name at the sentinels.
    pub sentinel: Option<String>,
    /// 0 unless given.
    pub db: u32,
    /// `#NAME`: a queue's name (only `--queue`, `--drain`, `--list` take one).
    pub name: Option<String>,
}

impl RedisUrl {
    /// The URL with the password replaced by `***`.
    pub fn masked(&self) -> String {
        self.render(Some("***"))
    }

    /// The URL without its password, as a saved job keeps it (a user name
    /// stays, with an empty password: the drain supplies its own).
    pub fn without_password(&self) -> String {
        self.render(None)
    }

    fn render(&self, password: Option<&str>) -> String {
        let mut out = String::from(match (&self.sentinel, self.tls) {
            (Some(_), _) => "redis+sentinel://",
            (None, true) => "rediss://",
            (None, false) => "redis://",
        });
        match (&self.user, &self.password, password) {
            (Some(u), Some(_), Some(mask)) => out.push_str(&format!("{u}:{mask}@")),
            (None, Some(_), Some(mask)) => out.push_str(&format!(":{mask}@")),
            (Some(u), _, _) => out.push_str(&format!("{u}:@")),
            (None, _, _) => {}
        }
        let nodes: Vec<String> = self.nodes.iter().map(|(h, p)| node(h, *p)).collect();
        out.push_str(&nodes.join(","));
        if let Some(master) = &self.sentinel {
            out.push_str(&format!("/{master}"));
        }
        out.push_str(&format!("/{}", self.db));
        if let Some(name) = &self.name {
            out.push_str(&format!("#{name}"));
        }
        out
    }

    /// The password to give: the URL's, else `RETRY_REDIS_PASSWORD` (when
    /// set and not empty).
    pub fn password(&self) -> Option<String> {
        self.password.clone().or_else(|| std::env::var(PASSWORD_ENV).ok().filter(|p| !p.is_empty()))
    }

    /// The first node, for messages about "the server".
    pub fn first(&self) -> String {
        self.nodes.first().map_or_else(String::new, |(h, p)| node(h, *p))
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Is this environment entry (`NAME=value`) `RETRY_REDIS_PASSWORD`? A
/// queued job never keeps it.
pub fn is_password_variable(entry: &[u8]) -> bool {
    entry.strip_prefix(PASSWORD_ENV.as_bytes()).is_some_and(|rest| rest.first() == Some(&b'='))
}

/// retry's arguments with every Redis URL in them (`URL` or `--opt=URL`)
/// written without its password, as a queued job keeps them: a drain
/// connects with its own (its URL, or its `RETRY_REDIS_PASSWORD`).
pub fn without_passwords(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    args.into_iter().map(without_password).collect()
}

/// One argument of [`without_passwords`].
pub fn without_password(arg: std::ffi::OsString) -> std::ffi::OsString {
    let Some(text) = arg.to_str() else { return arg };
    let (flag, value) = match text.split_once('=') {
        Some((flag, value)) if flag.starts_with("--") => (format!("{flag}="), value),
        _ => (String::new(), text),
    };
    match parse(value) {
        Ok(StoreUrl::Redis(url)) if url.password.is_some() => {
            format!("{flag}{}", url.without_password()).into()
        }
        _ => arg,
    }
}

const HINT: &str = "expected file:DIR, redis[s]://[user:pass@]host[:port][,host[:port]...][/db] \
                    or redis+sentinel://[user:pass@]host[:port][,...]/MASTER[/db]";

/// Parses a store URL. The error reason never contains the password.
pub fn parse(text: &str) -> Result<StoreUrl, String> {
    if let Some(rest) = text.strip_prefix("file:") {
        return parse_file(rest).map(StoreUrl::File);
    }
    let (tls, sentinel, rest) = if let Some(rest) = text.strip_prefix("redis://") {
        (false, false, rest)
    } else if let Some(rest) = text.strip_prefix("rediss://") {
        (true, false, rest)
    } else if let Some(rest) = text.strip_prefix("redis+sentinel://") {
        (false, true, rest)
    } else {
        return Err(format!("unknown kind of store; {HINT}"));
    };
    parse_redis(tls, sentinel, rest).map(StoreUrl::Redis)
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

fn parse_redis(tls: bool, sentinel: bool, rest: &str) -> Result<RedisUrl, String> {
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
    let (hostports, path) = match rest.find('/') {
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
                            redis://:pass@host for the default user, or redis://user:@host \
                            with the password in RETRY_REDIS_PASSWORD"
                    .to_string());
            };
            let user = if u.is_empty() {
                None
            } else {
                Some(percent_decode(u).ok_or_else(|| "bad %-escape in the user name".to_string())?)
            };
            let password = percent_decode(p).ok_or_else(|| "bad %-escape in the password".to_string())?;
            (user, Some(password).filter(|p| !p.is_empty()))
        }
    };
    let default_port = if sentinel { SENTINEL_PORT } else { 6379 };
    let nodes =
        hostports.split(',').map(|hp| parse_node(hp, default_port)).collect::<Result<Vec<_>, String>>()?;
    let mut segments = path.unwrap_or("").split('/');
    let master = if sentinel {
        match segments.next() {
            Some(m) if super::valid_name(m) => Some(m.to_string()),
            Some("") | None => {
                return Err("a sentinel URL names its master: redis+sentinel://s1:26379,s2:26379/mymaster"
                    .to_string());
            }
            Some(m) => return Err(format!("'{m}' is not a master name: {}", super::NAME_RULE)),
        }
    } else {
        None
    };
    let db = match (segments.next(), segments.next()) {
        (None | Some(""), None) => 0,
        (Some(d), None) => match d.parse::<u32>() {
            Ok(n) if d.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(format!("'/{d}' is not a database number")),
        },
        (Some(d), Some(e)) => return Err(format!("'/{d}/{e}' is not a database number")),
        (None, Some(_)) => return Err(format!("unexpected path; {HINT}")),
    };
    Ok(RedisUrl { tls, user, password, nodes, sentinel: master, db, name })
}

/// `host[:port]` or `[v6][:port]`.
fn parse_node(hostport: &str, default_port: u16) -> Result<(String, u16), String> {
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
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(format!("'{p}' is not a port (1-65535)")),
        },
    };
    Ok((host.to_string(), port))
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

/// `host:port`, with an IPv6 address in brackets: `[::1]:6379`.
pub(crate) fn node(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
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
        assert_eq!((r.tls, r.nodes[0].0.as_str(), r.nodes[0].1, r.db), (false, "localhost", 6379, 0));
        assert_eq!((r.user, r.password, r.name), (None, None, None));
        let r = redis("rediss://app:s3cr%40t@cache.internal:6380/2#jobs");
        assert!(r.tls);
        assert_eq!(r.user.as_deref(), Some("app"));
        assert_eq!(r.password.as_deref(), Some("s3cr@t"));
        assert_eq!(
            (r.nodes[0].0.as_str(), r.nodes[0].1, r.db, r.name.as_deref()),
            ("cache.internal", 6380, 2, Some("jobs"))
        );
        let r = redis("redis://:pw@[::1]:7000/");
        assert_eq!(
            (r.user, r.password.as_deref(), r.nodes[0].0.as_str(), r.nodes[0].1),
            (None, Some("pw"), "::1", 7000)
        );
        let r = redis("redis://user:p:w@h");
        assert_eq!(r.password.as_deref(), Some("p:w"));
        // Raw `/`, `#`, `?`, `@` in a password: the last `@` ends it.
        let r = redis("redis://u:a/b#c?d@e@h:1/2#q");
        assert_eq!(r.password.as_deref(), Some("a/b#c?d@e"));
        assert_eq!((r.nodes[0].0.as_str(), r.nodes[0].1, r.db, r.name.as_deref()), ("h", 1, 2, Some("q")));
    }

    #[test]
    fn cluster_seeds_and_sentinels() {
        let r = redis("redis://h1:7000,h2:7001,[::1]/0#q");
        let want = [("h1", 7000), ("h2", 7001), ("::1", 6379)];
        assert_eq!(r.nodes, want.map(|(h, p)| (h.to_string(), p)));
        assert_eq!(r.masked(), "redis://h1:7000,h2:7001,[::1]:6379/0#q");
        let r = redis("redis+sentinel://:pw@s1,s2:26380/mymaster/2#jobs");
        assert_eq!(r.sentinel.as_deref(), Some("mymaster"));
        assert_eq!(r.nodes, [("s1".to_string(), 26379), ("s2".to_string(), 26380)]);
        assert_eq!((r.db, r.name.as_deref()), (2, Some("jobs")));
        assert_eq!(r.masked(), "redis+sentinel://:***@s1:26379,s2:26380/mymaster/2#jobs");
        for bad in [
            "redis+sentinel://s1",
            "redis+sentinel://s1/",
            "redis+sentinel://s1/m/x",
            "redis://h1,",
            "redis://a/1/2",
        ] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn saved_arguments_keep_no_password() {
        let args: Vec<std::ffi::OsString> =
            ["--state-store", "redis://:pw1@h", "--state-store=rediss://u:pw2@h:1/2", "-n", "3", "redis://h"]
                .iter()
                .map(Into::into)
                .collect();
        let got = without_passwords(args);
        assert_eq!(
            got,
            ["--state-store", "redis://h:6379/0", "--state-store=rediss://u:@h:1/2", "-n", "3", "redis://h"]
        );
        assert!(is_password_variable(b"RETRY_REDIS_PASSWORD=x"));
        assert!(!is_password_variable(b"RETRY_REDIS_PASSWORDS=x") && !is_password_variable(b"X=1"));
    }

    #[test]
    fn a_saved_url_keeps_no_password() {
        let r = redis("redis://app:hunter2@h:1/3");
        assert_eq!(r.without_password(), "redis://app:@h:1/3");
        let again = redis(&r.without_password());
        assert_eq!((again.user.as_deref(), again.password), (Some("app"), None));
        assert_eq!(redis("rediss://:hunter2@h").without_password(), "rediss://h:6379/0");
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
