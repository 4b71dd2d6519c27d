//! Pure parsers for option values: DURATION, CODES, jitter, multiplier and
//! SIGNAL. They return a short reason on failure; clap (via `cli.rs`) adds
//! the option name and the bad value, so users see
//! `invalid value '5x' for '--wait <DURATION>': expected ...`.

use std::time::Duration;

/// What a DURATION looks like, for error messages.
const DURATION_HINT: &str =
    "expected a duration such as 250ms, 1.5s, 1m30s, 2h, 3days or a number of seconds";

/// Parses a DURATION (SPEC "Attempts and time"): a humantime string
/// (`250ms`, `1m30s`, `3days`), a decimal number with one unit (`1.5s`,
/// `0.5m`), or a bare non-negative number of seconds (`2`, `0.25`).
pub fn duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err(format!("empty duration; {DURATION_HINT}"));
    }
    // A bare number: seconds.
    if is_decimal(s) {
        return secs_f64(s, 1.0);
    }
    // A decimal with one unit: `1.5s`, `0.5m`, `2.5 days`.
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    if number.contains('.') && is_decimal(number) {
        let unit = unit.trim();
        let one = humantime::parse_duration(&format!("1{unit}"))
            .map_err(|_| format!("unknown unit '{unit}'; {DURATION_HINT}"))?;
        return secs_f64(number, one.as_secs_f64());
    }
    humantime::parse_duration(s).map_err(|_| DURATION_HINT.to_string())
}

/// `digits[.digits]`, nothing else (no sign, no exponent).
fn is_decimal(s: &str) -> bool {
    let mut parts = s.splitn(2, '.');
    let int = parts.next().unwrap_or("");
    let frac = parts.next();
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    match frac {
        None => !int.is_empty() && digits(int),
        Some(f) => (!int.is_empty() || !f.is_empty()) && digits(int) && digits(f),
    }
}

fn secs_f64(number: &str, unit_secs: f64) -> Result<Duration, String> {
    let n: f64 = number.parse().map_err(|_| format!("not a number; {DURATION_HINT}"))?;
    Duration::try_from_secs_f64(n * unit_secs).map_err(|_| format!("out of range; {DURATION_HINT}"))
}

/// A set of attempt statuses 0..=255 (CODES: `1,7,75-78,124`).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct CodeSet([u64; 4]);

impl CodeSet {
    pub fn insert(&mut self, code: u8) {
        self.0[usize::from(code / 64)] |= 1u64 << (code % 64);
    }
    pub fn contains(&self, code: u8) -> bool {
        self.0[usize::from(code / 64)] & (1u64 << (code % 64)) != 0
    }
    pub fn union(mut self, other: CodeSet) -> CodeSet {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a |= b;
        }
        self
    }
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }
    /// Canonical text (`1,7,75-78`), used in messages and the summary.
    pub fn to_text(&self) -> String {
        let mut out: Vec<String> = Vec::new();
        let mut code = 0u16;
        while code <= 255 {
            if self.contains(code as u8) {
                let start = code;
                while code < 255 && self.contains((code + 1) as u8) {
                    code += 1;
                }
                out.push(if start == code { start.to_string() } else { format!("{start}-{code}") });
            }
            code += 1;
        }
        out.join(",")
    }
}

impl std::fmt::Debug for CodeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CodeSet({})", self.to_text())
    }
}

/// Parses CODES: a comma list of statuses (0-255) and ranges `a-b`.
pub fn codes(text: &str) -> Result<CodeSet, String> {
    const HINT: &str = "expected statuses 0-255 and ranges, e.g. 1,7,75-78,124";
    let mut set = CodeSet::default();
    for item in text.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(format!("empty item; {HINT}"));
        }
        if item.starts_with(['-', '+']) {
            return Err(format!("'{item}' is not a status (no sign); {HINT}"));
        }
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (code(a.trim(), HINT)?, code(b.trim(), HINT)?),
            None => {
                let c = code(item, HINT)?;
                (c, c)
            }
        };
        if lo > hi {
            return Err(format!("range '{item}' runs backwards; {HINT}"));
        }
        for c in lo..=hi {
            set.insert(c);
        }
    }
    Ok(set)
}

fn code(s: &str, hint: &str) -> Result<u8, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{s}' is not a status; {hint}"));
    }
    s.parse::<u8>().map_err(|_| format!("'{s}' is out of range; {hint}"))
}

/// Parses `--jitter`: a fraction in [0, 1] or `none`/`equal`/`full`.
pub fn jitter(text: &str) -> Result<f64, String> {
    const HINT: &str = "expected a number from 0 to 1, or none, equal, full";
    match text.trim().to_ascii_lowercase().as_str() {
        "none" => Ok(0.0),
        "equal" => Ok(0.5),
        "full" => Ok(1.0),
        s if is_decimal(s) => match s.parse::<f64>() {
            Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
            _ => Err(format!("out of range; {HINT}")),
        },
        _ => Err(HINT.to_string()),
    }
}

/// Parses `--multiplier`: a finite decimal >= 1.
pub fn multiplier(text: &str) -> Result<f64, String> {
    const HINT: &str = "expected a decimal number of at least 1, e.g. 1.5";
    let s = text.trim();
    match s.parse::<f64>() {
        Ok(m) if is_decimal(s) && m >= 1.0 && m.is_finite() => Ok(m),
        _ => Err(HINT.to_string()),
    }
}

/// Signal names in number order (Linux x86-64/arm64 numbering).
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// The highest signal number Linux accepts.
const SIGMAX: i32 = 64;

/// Parses a SIGNAL: `TERM`, `SIGTERM`, `term`, `15`.
pub fn signal(text: &str) -> Result<i32, String> {
    const HINT: &str = "expected a signal name such as TERM, SIGINT, KILL or a number 1-64";
    let s = text.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return match s.parse::<i32>() {
            Ok(n) if (1..=SIGMAX).contains(&n) => Ok(n),
            _ => Err(format!("signal number out of range; {HINT}")),
        };
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let aliases = [("IOT", libc::SIGIOT), ("POLL", libc::SIGPOLL), ("CLD", libc::SIGCHLD)];
    SIGNALS
        .iter()
        .chain(aliases.iter())
        .find(|(n, _)| *n == name)
        .map(|(_, num)| *num)
        .ok_or_else(|| format!("unknown signal; {HINT}"))
}

/// `SIGTERM` for 15; `SIG34` for a number without a name.
pub fn signal_name(num: i32) -> String {
    match SIGNALS.iter().find(|(_, n)| *n == num) {
        Some((name, _)) => format!("SIG{name}"),
        None => format!("SIG{num}"),
    }
}

/// `1 attempt`, `3 attempts`: a count and its noun, singular or plural.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

/// Renders a duration for people: `250ms`, `1.9s`, `3m12s`, `2h5m`.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        let tenths = (secs * 10.0).round() / 10.0;
        return if tenths.fract() == 0.0 { format!("{tenths:.0}s") } else { format!("{tenths:.1}s") };
    }
    let total = d.as_secs().saturating_add(u64::from(d.subsec_millis() >= 500));
    let (days, rest) = (total / 86_400, total % 86_400);
    let (hours, rest) = (rest / 3600, rest % 3600);
    let (mins, secs) = (rest / 60, rest % 60);
    let mut out = String::new();
    for (value, unit) in [(days, "d"), (hours, "h"), (mins, "m"), (secs, "s")] {
        if value > 0 {
            out.push_str(&format!("{value}{unit}"));
        }
    }
    out
}

/// A URL with its password replaced by `***`, for every output that shows
/// one (logs, `--summary`, `-v`): `redis://user:secret@host:6379/0` →
/// `redis://user:***@host:6379/0`, `redis://:pass@h` → `redis://:***@h`.
/// The user info ends at the LAST `@` after `://`, so a password with a
/// raw `@`, `/`, `#` or `?` in it (base64 makes `/`) is masked whole; a
/// user info without a colon may be a password alone (redis-cli reads
/// `redis://secret@host` so) and is masked whole: `redis://***@host`.
/// Text without `://` (`file:DIR`, a path) or without an `@` comes back
/// unchanged. This is the one masker of text a user typed; a parsed store
/// URL prints itself masked (`StoreUrl::masked`).
pub fn mask_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let start = scheme_end + 3;
    let rest = &url[start..];
    let Some(at) = rest.rfind('@') else {
        return url.to_string();
    };
    let password_start = start + rest[..at].find(':').map_or(0, |colon| colon + 1);
    format!("{}***{}", &url[..password_start], &url[start + at..])
}

/// A set of signal numbers 1..=64 (`--retry-on-signal KILL,TERM,11`).
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct SignalSet(u64);

impl SignalSet {
    pub fn contains(&self, sig: i32) -> bool {
        (1..=SIGMAX).contains(&sig) && self.0 & (1u64 << (sig - 1)) != 0
    }

    pub fn union(self, other: SignalSet) -> SignalSet {
        SignalSet(self.0 | other.0)
    }

    /// `SIGKILL,SIGTERM`, for reports.
    pub fn to_text(&self) -> String {
        (1..=SIGMAX).filter(|&s| self.contains(s)).map(signal_name).collect::<Vec<_>>().join(",")
    }
}

impl std::fmt::Debug for SignalSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// Parses SIGS: a comma list of signal names or numbers (`KILL,TERM,SEGV`, `9,15`).
pub fn signals(text: &str) -> Result<SignalSet, String> {
    let mut set = SignalSet::default();
    for part in text.split(',') {
        let sig = signal(part).map_err(|e| format!("'{}': {e}", part.trim()))?;
        set.0 |= 1u64 << (sig - 1);
    }
    Ok(set)
}

/// `--delays LIST`: the delays before retries 1, 2, … (one value to clap).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delays(pub Vec<Duration>);

/// Parses `--delays LIST`: DURATIONs separated by commas (`1s,5s,30s,2m`).
pub fn delays(text: &str) -> Result<Delays, String> {
    text.split(',')
        .map(|part| duration(part).map_err(|e| format!("'{}': {e}", part.trim())))
        .collect::<Result<Vec<_>, _>>()
        .map(Delays)
}

/// `--rotate NAME=V1,V2,...`: a variable and the values attempts take in turn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    pub name: String,
    pub values: Vec<String>,
}

/// Parses `--rotate NAME=V1,V2,...` (a value may be empty: `A=x,,y`).
pub fn rotation(text: &str) -> Result<Rotation, String> {
    const HINT: &str = "expected NAME=V1,V2,... e.g. MIRROR=https://a.example,https://b.example";
    let Some((name, values)) = text.split_once('=') else {
        return Err(format!("no '='; {HINT}"));
    };
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        return Err(format!("'{name}' is not a variable name (letters, digits, '_'); {HINT}"));
    }
    if values.contains('\0') {
        return Err(format!("a value holds a NUL byte; {HINT}"));
    }
    Ok(Rotation { name: name.to_string(), values: values.split(',').map(str::to_string).collect() })
}

/// Reads a `--wait-from` hint (SPEC "Backoff"): a non-negative decimal
/// number of seconds (`120`), a DURATION (`1m30s`), an HTTP-date (`Wed, 21
/// Oct 2026 07:28:00 GMT`, RFC 9110, with its two obsolete forms), an RFC
/// 3339 timestamp (`2026-10-21T07:28:00Z`, `…+02:00`), or a Unix time in
/// seconds (a number >= 1000000000, as in `X-RateLimit-Reset`). Returns
/// how long from `now` until the hinted moment (zero when it is past);
/// `None` when the text is none of these.
pub fn hint(text: &str, now: std::time::SystemTime) -> Option<Duration> {
    use std::time::{SystemTime, UNIX_EPOCH};
    let s = text.trim();
    let until = |t: SystemTime| t.duration_since(now).unwrap_or(Duration::ZERO);
    if is_decimal(s) {
        let n: f64 = s.parse().ok()?;
        let d = Duration::try_from_secs_f64(n).ok()?;
        return Some(if n >= 1e9 { until(UNIX_EPOCH.checked_add(d)?) } else { d });
    }
    if let Ok(d) = duration(s) {
        return Some(d);
    }
    if let Some(t) = rfc3339_with_offset(s) {
        return Some(until(t));
    }
    httpdate::parse_http_date(s).ok().map(until)
}

/// RFC 3339 with `Z` or a numeric offset (humantime reads `Z` only).
fn rfc3339_with_offset(s: &str) -> Option<std::time::SystemTime> {
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        if s.ends_with(['Z', 'z']) {
            return Some(t);
        }
    }
    // `…T07:28:00+02:00`: the offset is the last six bytes.
    let (base, offset) = s.split_at_checked(s.len().checked_sub(6)?)?;
    let (sign, hhmm) = offset.split_at(1);
    let (hh, mm) = hhmm.split_once(':')?;
    let minutes = hh.parse::<u64>().ok()? * 60 + mm.parse::<u64>().ok()?;
    if !base.contains('T') && !base.contains('t') {
        return None;
    }
    let utc = humantime::parse_rfc3339_weak(base).ok()?;
    let shift = Duration::from_secs(minutes * 60);
    match sign {
        "+" => utc.checked_sub(shift),
        "-" => utc.checked_add(shift),
        _ => None,
    }
}

// ----- Shared-state names and limits (`--key`, `--rate`, `--concurrency`) -----

/// The largest N of `--rate N/DURATION` (SPEC Edge rules).
pub const RATE_MAX: u32 = 10_000;

/// The largest N of `--concurrency N`: the file store keeps one lock file
/// per slot and may try each of them before an attempt.
pub const CONCURRENCY_MAX: u32 = 1000;

/// The longest key: file names add a suffix and must stay under 255 bytes.
pub const KEY_MAX: usize = 200;

/// What a key (and a queue name) may be, for messages.
pub const NAME_RULE: &str = "use 1-200 letters, digits, '.', '_' and '-', not starting with '.'";

/// Letters, digits, `._-`; not empty, not too long, not starting with `.`
/// (so never `.`, `..` or a hidden file): a key can never leave the store's
/// directory.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= KEY_MAX
        && !s.starts_with('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The name of a job's shared state (`--key`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key(String);

impl Key {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `--key` value parser.
pub fn parse_key(text: &str) -> Result<Key, String> {
    if valid_name(text) { Ok(Key(text.to_string())) } else { Err(NAME_RULE.to_string()) }
}

/// `--rate N/DURATION`: at most `n` attempt starts in any interval of
/// length `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub n: u32,
    pub window: Duration,
}

/// `--rate` value parser: `30/1m`, `5/500ms`, `100/s` (a bare unit is one
/// of it). N is 1 to 10,000; the window is positive.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    const HINT: &str = "expected N/DURATION with N from 1 to 10000, e.g. 30/1m or 5/500ms";
    let Some((n, window)) = text.trim().split_once('/') else {
        return Err(format!("no '/'; {HINT}"));
    };
    let n = n.trim();
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{n}' is not a number; {HINT}"));
    }
    let n = match n.parse::<u32>() {
        Ok(n) if (1..=RATE_MAX).contains(&n) => n,
        _ => return Err(format!("N is out of range; {HINT}")),
    };
    let window = window.trim();
    let bare_unit = !window.is_empty() && window.bytes().all(|b| b.is_ascii_alphabetic());
    let parsed = if bare_unit { duration(&format!("1{window}")) } else { duration(window) };
    match parsed {
        Ok(w) if !w.is_zero() => Ok(Rate { n, window: w }),
        Ok(_) => Err(format!("the window must be longer than 0; {HINT}")),
        Err(e) => Err(format!("bad window: {e}")),
    }
}

/// An OS error without Rust's " (os error N)" suffix: `Permission denied`.
pub fn os_error(e: &std::io::Error) -> String {
    without_os_error(e.to_string())
}

/// An error's text without the " (os error N)" that Rust's `io::Error`
/// (and errors quoting one) end with.
pub fn without_os_error(text: String) -> String {
    match text.find(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// `--flaky-exit N`: 1–123 and not 75, so a flaky success never looks
/// like success (0), a queued job or an open circuit (75), retry's own
/// failure (125), a spawn failure (126/127) or a death by signal (128+).
pub fn flaky_exit(text: &str) -> Result<u8, String> {
    const HINT: &str = "expected a status from 1 to 123, not 75 (e.g. 3)";
    match text.trim().parse::<u8>() {
        Ok(75) => Err(format!("75 means a queued job or an open circuit; {HINT}")),
        Ok(n @ 1..=123) => Ok(n),
        Ok(_) | Err(_) => Err(HINT.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flaky_exit_statuses() {
        assert_eq!(flaky_exit("1"), Ok(1));
        assert_eq!(flaky_exit("123"), Ok(123));
        for bad in ["0", "75", "124", "125", "126", "127", "128", "255", "256", "-1", "x", ""] {
            assert!(flaky_exit(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn durations_in_every_accepted_form() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("250ms", ms(250)),
            ("1m30s", ms(90_000)),
            ("2h", ms(7_200_000)),
            ("3days", ms(3 * 86_400_000)),
            ("1.5s", ms(1500)),
            ("0.5m", ms(30_000)),
            ("2", ms(2000)),
            ("0.25", ms(250)),
            ("0", ms(0)),
            (".5", ms(500)),
            ("10ms", ms(10)),
            ("1.5 s", ms(1500)),
            (" 3s ", ms(3000)),
        ] {
            assert_eq!(duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn durations_rejected() {
        for text in ["", "-1", "5x", "1.5.5s", "abc", "1e3", "1.5q", "s", "nan", "inf", "-0.5s"] {
            assert!(duration(text).is_err(), "{text} accepted");
        }
    }

    #[test]
    fn huge_durations_do_not_panic() {
        assert!(duration("99999999999999999999999999").is_err());
        assert!(duration("99999999999999999999.5h").is_err());
    }

    #[test]
    fn code_lists_and_ranges() {
        let set = codes("1,7,75-78,124").unwrap();
        for c in [1, 7, 75, 76, 77, 78, 124] {
            assert!(set.contains(c), "{c}");
        }
        for c in [0, 2, 74, 79, 123, 125, 255] {
            assert!(!set.contains(c), "{c}");
        }
        assert_eq!(set.to_text(), "1,7,75-78,124");
        assert_eq!(codes("0-255").unwrap().to_text(), "0-255");
        assert_eq!(codes(" 3 , 4-5 ").unwrap().to_text(), "3-5");
    }

    #[test]
    fn code_lists_rejected() {
        for text in ["", "1,", "a", "256", "5-3", "1-", "-1", "1,,2", "1-2-3", "+1"] {
            assert!(codes(text).is_err(), "{text} accepted");
        }
        // A sign is named as such, not as an empty status.
        assert!(codes("-1").unwrap_err().starts_with("'-1' is not a status (no sign)"));
        assert_eq!(count(1, "attempt"), "1 attempt");
        assert_eq!(count(0, "attempt"), "0 attempts");
    }

    #[test]
    fn jitter_words_and_numbers() {
        assert_eq!(jitter("none"), Ok(0.0));
        assert_eq!(jitter("equal"), Ok(0.5));
        assert_eq!(jitter("FULL"), Ok(1.0));
        assert_eq!(jitter("0.25"), Ok(0.25));
        assert_eq!(jitter("1"), Ok(1.0));
        for bad in ["2", "-0.1", "1.01", "half", "", "nan"] {
            assert!(jitter(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn multipliers() {
        assert_eq!(multiplier("1.5"), Ok(1.5));
        assert_eq!(multiplier("1"), Ok(1.0));
        for bad in ["0.5", "-2", "inf", "nan", "x", "1e400"] {
            assert!(multiplier(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(signal("TERM"), Ok(15));
        assert_eq!(signal("SIGTERM"), Ok(15));
        assert_eq!(signal("sigint"), Ok(2));
        assert_eq!(signal("kill"), Ok(9));
        assert_eq!(signal("15"), Ok(15));
        assert_eq!(signal("64"), Ok(64));
        assert_eq!(signal("HUP"), Ok(1));
        for bad in ["0", "65", "TERMX", "SIG", "", "-9"] {
            assert!(signal(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(40), "SIG40");
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_millis(250)), "250ms");
        assert_eq!(human(Duration::from_millis(1900)), "1.9s");
        assert_eq!(human(Duration::from_secs(2)), "2s");
        assert_eq!(human(Duration::from_secs(192)), "3m12s");
        assert_eq!(human(Duration::from_secs(7500)), "2h5m");
        assert!(human(Duration::MAX).ends_with('s'));
    }

    #[test]
    fn urls_are_masked() {
        for (url, want) in [
            ("redis://user:secret@host:6379/0", "redis://user:***@host:6379/0"),
            ("rediss://user:secret@host:6380/2#jobs", "rediss://user:***@host:6380/2#jobs"),
            ("redis://:pass@h", "redis://:***@h"),
            ("redis://u:p@ss@host/1", "redis://u:***@host/1"),
            ("redis://:@h", "redis://:***@h"),
            ("redis://user@host:6379", "redis://***@host:6379"),
            ("rediss://hunter2@h", "rediss://***@h"),
            ("redis://u:ab/c+d==@h:1/2", "redis://u:***@h:1/2"),
            ("redis://:p#w?x@h", "redis://:***@h"),
            ("redis://host:6379/0", "redis://host:6379/0"),
            // Not a valid URL (a name has no `@`): masked rather than trusted.
            ("redis://host/0#a:b@c", "redis://host/0#a:***@c"),
            ("file:/var/lib/retry", "file:/var/lib/retry"),
            ("file:", "file:"),
            ("", ""),
            ("/tmp/x:y@z", "/tmp/x:y@z"),
            ("rediss://ü:pässwörd@höst", "rediss://ü:***@höst"),
        ] {
            assert_eq!(mask_url(url), want, "{url}");
        }
    }

    #[test]
    fn keys() {
        for good in ["api", "nightly-sync", "a.b_c-9", "A", &"k".repeat(KEY_MAX)] {
            assert!(parse_key(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", ".hidden", "a/b", "../x", "a b", "é", "a\0b", &"k".repeat(KEY_MAX + 1)] {
            assert!(parse_key(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rates() {
        let r = |n, ms| Ok(Rate { n, window: Duration::from_millis(ms) });
        assert_eq!(parse_rate("30/1m"), r(30, 60_000));
        assert_eq!(parse_rate("5/500ms"), r(5, 500));
        assert_eq!(parse_rate("100/s"), r(100, 1000));
        assert_eq!(parse_rate("10000/1h"), r(10_000, 3_600_000));
        assert_eq!(parse_rate("2/1.5s"), r(2, 1500));
        for bad in
            ["", "10", "/1s", "x/1s", "0/1s", "10001/1s", "-1/1s", "5/0s", "5/", "5/x", "5/1q", "1.5/1s"]
        {
            assert!(parse_rate(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn signal_sets() {
        let set = signals("KILL, sigterm,11").unwrap();
        assert!(set.contains(9) && set.contains(15) && set.contains(11) && !set.contains(2));
        assert_eq!(set.to_text(), "SIGKILL,SIGSEGV,SIGTERM");
        for bad in ["", "KILL,", "NOPE", "0", "65", "9,x"] {
            assert!(signals(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn delay_lists() {
        let s = Duration::from_secs;
        assert_eq!(delays("1s,5s,30s,2m"), Ok(Delays(vec![s(1), s(5), s(30), s(120)])));
        assert_eq!(delays("0.5"), Ok(Delays(vec![Duration::from_millis(500)])));
        for bad in ["", "1s,", "1s,x", ",1s"] {
            assert!(delays(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn rotations() {
        let r = rotation("MIRROR=https://a.example,https://b.example").unwrap();
        assert_eq!((r.name.as_str(), r.values.len()), ("MIRROR", 2));
        assert_eq!(rotation("A=x,,y").unwrap().values, ["x", "", "y"]);
        assert_eq!(rotation("A=").unwrap().values, [""]);
        for bad in ["A", "=x", "1A=x", "A-B=x", "A B=x"] {
            assert!(rotation(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn hints_in_every_grammar() {
        use std::time::UNIX_EPOCH;
        let now = UNIX_EPOCH + Duration::from_secs(1_792_000_000);
        let s = Duration::from_secs;
        assert_eq!(hint("120", now), Some(s(120)));
        assert_eq!(hint(" 1.5 ", now), Some(Duration::from_millis(1500)));
        assert_eq!(hint("1m30s", now), Some(s(90)));
        assert_eq!(hint("1792000030", now), Some(s(30)), "a Unix time");
        assert_eq!(hint("1700000000", now), Some(Duration::ZERO), "a past Unix time");
        let date = humantime::format_rfc3339_seconds(now + s(60)).to_string();
        assert_eq!(hint(&date, now), Some(s(60)));
        let offset = date.replace('Z', "+01:00");
        // The same clock time at +01:00 is an hour earlier.
        assert_eq!(hint(&offset, now - s(3600)), Some(s(60)));
        assert_eq!(hint(&offset, now), Some(Duration::ZERO));
        assert_eq!(hint(&date.replace('Z', "-00:30"), now), Some(s(60 + 1800)));
        let http = httpdate::fmt_http_date(now + s(45));
        assert_eq!(hint(&http, now), Some(s(45)), "{http}");
        assert_eq!(hint("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(Duration::ZERO), "a past date");
        assert_eq!(hint("Sunday, 06-Nov-94 08:49:37 GMT", now), Some(Duration::ZERO), "RFC 850");
        assert_eq!(hint("Sun Nov  6 08:49:37 1994", now), Some(Duration::ZERO), "asctime");
        for bad in ["", "soon", "-5", "1e3", "tomorrow 9am", "2026-13-45T00:00:00Z"] {
            assert_eq!(hint(bad, now), None, "{bad}");
        }
    }
}
