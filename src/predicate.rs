//! jq predicates for `--until` and `--retry-if`: the only module that uses jaq.
//!
//! The rest of the crate sees a small, non-generic API: [`Predicate::compile`] once before the
//! first attempt, then either [`evaluate`] in-process or, as `retry` does, the helper protocol
//! ([`request_header`], [`helper_main`], [`parse_response`]). The helper exists because jaq
//! cannot be interrupted: `def f: f; f` never returns and `def f: 1 + f; f` overflows the stack,
//! which aborts the whole process. A re-executed `retry` that the parent can kill contains both.
//!
//! Keeping jaq behind non-generic functions also keeps release rebuilds fast: the interpreter is
//! monomorphised here, not in every caller.
//!
//! Side effects a predicate can have, all harmless: `debug`, `stderr` and `halt_error`'s message
//! are silent, because jaq-std 3.0 sends them through the `log` crate (`log::debug!`,
//! `log::error!`) and retry installs no logger; `halt`/`halt_error` end only the evaluation,
//! never the process, because the run loop below turns the halt exception into a failure
//! instead of calling `jaq_core::unwrap_valr`.

#![warn(clippy::unwrap_used)]

use std::fmt::{self, Write as _};
use std::io::{Read as _, Write as _};
use std::sync::Arc;

use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::{Compiler, Ctx, ValT as _, Vars, data::JustLut};
use jaq_json::Val;
use serde::{Deserialize, Serialize};

/// jaq's data kind for plain JSON values with no global state (no `input`/`inputs`).
type Data = JustLut<Val>;

/// Global variables bound for every predicate, in the order their values are passed to `Vars`.
const GLOBAL_VARS: [&str; 3] = ["$attempt", "$elapsed", "$ENV"];

/// Stack of the evaluation thread. Deeply nested input and deep (finite) recursion need it;
/// it is only reserved address space until touched.
const EVAL_STACK_BYTES: usize = 256 * 1024 * 1024;

/// How much of a value or error message a reason quotes.
const QUOTE_CHARS: usize = 100;

/// The hidden argv\[1\] that makes the binary run [`helper_main`].
pub const HELPER_ARG: &str = "--internal-eval-predicate";

/// Version of the helper request header; the parent and helper are the same binary, so a
/// mismatch means a corrupted request rather than version skew.
const PROTOCOL_VERSION: u32 = 1;

/// A compiled jq expression (`--until` or `--retry-if`).
///
/// `$attempt` (integer, 1-based), `$elapsed` (seconds, float) and `$ENV` (the process
/// environment as an object) are bound.
#[derive(Clone)]
pub struct Predicate {
    source: String,
    /// Shared because jaq's compiled filter is not `Clone`, and a `Config` may be.
    filter: Arc<jaq_core::Filter<Data>>,
}

impl fmt::Debug for Predicate {
    // The compiled lookup table is large and meaningless to a reader; the source says it all.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Predicate").field("source", &self.source).finish_non_exhaustive()
    }
}

impl Predicate {
    /// Compile once, before the first attempt.
    pub fn compile(source: &str) -> Result<Predicate, CompileError> {
        // The standard library is parsed and compiled for each predicate (about 0.5 ms);
        // caching it would need the arena to outlive the call, which is not worth it.
        let defs = jaq_core::defs().chain(jaq_std::defs()).chain(jaq_json::defs());
        let funs = jaq_core::funs().chain(jaq_std::funs()).chain(jaq_json::funs());

        let arena = Arena::default();
        // The default reader already refuses `include "m";` and `import "m" as m;`.
        let modules = Loader::new(defs)
            .load(&arena, File { code: source, path: () })
            .map_err(|errs| load_error(source, &errs))?;
        // `import "data" as $v;` would declare a variable nobody can fill: refuse it too.
        load::import(&modules, |_| Err("data imports are not supported".into()))
            .map_err(|errs| load_error(source, &errs))?;
        let filter = Compiler::default()
            .with_funs(funs)
            .with_global_vars(GLOBAL_VARS)
            .compile(modules)
            .map_err(|errs| compile_error(source, &errs))?;
        Ok(Predicate { source: source.to_owned(), filter: Arc::new(filter) })
    }

    /// The expression as the user wrote it.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// A malformed expression.
///
/// `Display` is one line without the option name (the caller adds it), e.g.
/// `unexpected end of input, expected term at line 1, column 8`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// What is wrong, without the position.
    pub message: String,
    /// 1-based line of the mistake; 0 when jaq gave no position inside the expression.
    pub line: usize,
    /// 1-based column (in characters) of the mistake; 0 when `line` is 0.
    pub column: usize,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.message)
        } else {
            write!(f, "{} at line {}, column {}", self.message, self.line, self.column)
        }
    }
}

impl std::error::Error for CompileError {}

impl CompileError {
    /// `found` must be a slice of `code` for the position to be known. jaq's errors may also
    /// point into its embedded prelude, whose `File` has empty code, so the containment is
    /// checked here instead of trusting `load::span` (which underflows in that case).
    fn at(code: &str, found: &str, message: String) -> CompileError {
        let (line, column) = position(code, found).unwrap_or((0, 0));
        CompileError { message, line, column }
    }
}

/// 1-based line and column of where `part` starts, if it lies inside `whole`.
fn position(whole: &str, part: &str) -> Option<(usize, usize)> {
    let offset = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    if offset.checked_add(part.len())? > whole.len() {
        return None;
    }
    let before = whole.get(..offset)?;
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..)?.chars().count() + 1;
    Some((line, column))
}

/// "unexpected X" for the text at which jaq stopped; an empty slice means the end of input.
fn unexpected(found: &str) -> String {
    if found.is_empty() {
        "unexpected end of input".to_owned()
    } else {
        // A parse error's token can be a whole bracketed block: quote only its start.
        format!("unexpected '{}'", one_line(found.as_bytes(), 20))
    }
}

fn load_error(code: &str, errs: &load::Errors<&str, ()>) -> CompileError {
    // Report the first error only: one line is what a usage error can show, and later errors
    // are often consequences of the first.
    let Some((_file, err)) = errs.first() else {
        return CompileError::at(code, "", "invalid expression".to_owned());
    };
    match err {
        load::Error::Lex(items) => match items.first() {
            // A lex error's slice is the rest of the input from the error on: name its first
            // character only.
            Some((expect, rest)) => {
                let end = rest.chars().next().map_or(0, char::len_utf8);
                let first = rest.get(..end).unwrap_or("");
                let what = match expect {
                    // `Expect::as_str` panics on delimiters other than these; match them here.
                    load::lex::Expect::Delim("(") => "closing parenthesis",
                    load::lex::Expect::Delim("[") => "closing bracket",
                    load::lex::Expect::Delim("{") => "closing brace",
                    load::lex::Expect::Delim(_) => "closing quote",
                    other => other.as_str(),
                };
                CompileError::at(code, rest, format!("{}, expected {what}", unexpected(first)))
            }
            None => CompileError::at(code, "", "invalid token".to_owned()),
        },
        load::Error::Parse(items) => match items.first() {
            Some((expect, found)) => {
                let what = match expect {
                    load::parse::Expect::Just(s) => format!("'{s}'"),
                    other => other.as_str().to_owned(),
                };
                CompileError::at(code, found, format!("{}, expected {what}", unexpected(found)))
            }
            None => CompileError::at(code, "", "syntax error".to_owned()),
        },
        load::Error::Io(items) => match items.first() {
            Some((path, why)) => CompileError::at(code, path, format!("{why}: \"{path}\"")),
            None => CompileError::at(code, "", "cannot load module".to_owned()),
        },
    }
}

fn compile_error(code: &str, errs: &jaq_core::compile::Errors<&str, ()>) -> CompileError {
    let first = errs.iter().flat_map(|(_file, items)| items.iter()).next();
    let Some((name, undefined)) = first else {
        return CompileError::at(code, "", "invalid expression".to_owned());
    };
    let message = match undefined {
        jaq_core::compile::Undefined::Filter(arity) => {
            format!("undefined filter '{name}/{arity}'")
        }
        other => format!("undefined {} '{name}'", other.as_str()),
    };
    CompileError::at(code, name, message)
}

/// What a predicate judged: `None` = it holds (truthy last output); `Some(reason)` = it does not.
pub type Judgement = Option<String>;

/// What the predicates read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// An attempt's raw stdout: a stream of JSON values (NDJSON, or values as `jq` reads them).
    Until,
    /// One JSON object: the context object of SPEC's `--retry-if`.
    RetryIf,
}

impl Mode {
    fn wire_name(self) -> &'static str {
        match self {
            Mode::Until => "until",
            Mode::RetryIf => "retry_if",
        }
    }

    fn from_wire_name(name: &str) -> Option<Mode> {
        match name {
            "until" => Some(Mode::Until),
            "retry_if" => Some(Mode::RetryIf),
            _ => None,
        }
    }

    /// What the input is called in reasons.
    fn input_name(self) -> &'static str {
        match self {
            Mode::Until => "stdout",
            Mode::RetryIf => "context",
        }
    }
}

/// Evaluate every predicate on `input`, in this process, and return one judgement per
/// predicate, in order.
///
/// For [`Mode::Until`] each predicate runs on each JSON value of `input` in order and the last
/// output of the whole stream decides, as with `jq -e`; no output fails, and so do empty or
/// non-JSON input and run-time errors. For [`Mode::RetryIf`] `input` is one JSON object and
/// the same rules apply.
///
/// Parsing and evaluation run on a thread with a 256 MiB stack, so deep input and deep finite
/// recursion work. Infinite loops and unbounded recursion are NOT contained here: run this in
/// the helper process ([`helper_main`]) when that matters.
pub fn evaluate(
    preds: &[Predicate],
    mode: Mode,
    input: &[u8],
    attempt: u32,
    elapsed_secs: f64,
) -> Vec<Judgement> {
    if preds.is_empty() {
        return Vec::new();
    }
    let all_fail = |reason: &str| vec![Some(reason.to_owned()); preds.len()];
    // `Val` is not `Send` (it uses `Rc`), so the thread gets the bytes and parses them itself.
    // A scoped thread can borrow `preds` and `input` instead of copying them.
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("predicate".to_owned())
            .stack_size(EVAL_STACK_BYTES)
            .spawn_scoped(scope, || evaluate_here(preds, mode, input, attempt, elapsed_secs));
        match spawned {
            Ok(handle) => match handle.join() {
                Ok(judgements) => judgements,
                // Joining here also keeps `scope` from re-raising the panic.
                Err(_) => all_fail("internal error: predicate evaluation panicked"),
            },
            Err(e) => all_fail(&format!("cannot start predicate evaluation: {e}")),
        }
    })
}

/// What a predicate has produced so far over the input stream.
enum Progress {
    /// No output yet.
    Nothing,
    /// The last output was neither `false` nor `null`.
    Truthy,
    /// The last output was `false` or `null` (kept to quote it).
    Falsy(Val),
    /// A run-time error or halt: final, later values are not evaluated.
    Failed(String),
}

impl Progress {
    fn judgement(self) -> Judgement {
        match self {
            Progress::Nothing => Some("no output".to_owned()),
            Progress::Truthy => None,
            Progress::Falsy(v) => Some(format!("last output was {}", quote_val(&v))),
            Progress::Failed(reason) => Some(reason),
        }
    }
}

/// The body of [`evaluate`], on the big-stack thread.
fn evaluate_here(
    preds: &[Predicate],
    mode: Mode,
    input: &[u8],
    attempt: u32,
    elapsed_secs: f64,
) -> Vec<Judgement> {
    let all_fail = |reason: String| vec![Some(reason); preds.len()];
    let name = mode.input_name();
    if input.iter().all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r')) {
        return all_fail(format!("{name} is empty"));
    }

    let attempt = Val::from(usize::try_from(attempt).unwrap_or(usize::MAX));
    let elapsed = Val::from(elapsed_secs);
    let env = env_object();
    let mut progress: Vec<Progress> = preds.iter().map(|_| Progress::Nothing).collect();

    // serde's stream reader stops after the first error; jaq's own reader (`parse_many`)
    // yields the same error forever. The recursion limit is off because the thread's stack is
    // big, and a stack overflow would only kill the helper process, which the parent reports.
    let mut de = serde_json::Deserializer::from_slice(input);
    de.disable_recursion_limit();
    let mut values = de.into_iter::<Val>();
    let mut count = 0usize;
    loop {
        let value = match values.next() {
            None => break,
            Some(Ok(value)) => value,
            // Invalid input fails every predicate, whatever earlier values gave: a command
            // that prints half a document has not produced what was asked for.
            Some(Err(e)) => return all_fail(format!("{name} is not JSON: {e}")),
        };
        count += 1;
        if mode == Mode::RetryIf && count > 1 {
            return all_fail(format!("{name} holds more than one JSON value"));
        }
        for (pred, state) in preds.iter().zip(progress.iter_mut()) {
            if matches!(state, Progress::Failed(_)) {
                continue;
            }
            let vars = Vars::new([attempt.clone(), elapsed.clone(), env.clone()]);
            run_one(pred, vars, value.clone(), state);
        }
    }
    progress.into_iter().map(Progress::judgement).collect()
}

/// Run one predicate on one value, updating what it has produced so far.
fn run_one(pred: &Predicate, vars: Vars<Val>, value: Val, state: &mut Progress) {
    let ctx = Ctx::<Data>::new(&pred.filter.lut, vars);
    for out in pred.filter.id.run((ctx, value)) {
        match out {
            Ok(v) if v.as_bool() => *state = Progress::Truthy,
            Ok(v) => *state = Progress::Falsy(v),
            Err(exn) => {
                // Never `unwrap_valr`: it calls `std::process::exit` on `halt`.
                let reason = match exn.get_err() {
                    Ok(err) => format!("error: {}", error_text(err)),
                    Err(exn) => match exn.get_halt() {
                        Ok(code) => format!("halted with exit code {code}"),
                        // Breaks and tail calls are internal to jaq and should not escape.
                        Err(_) => "error: unexpected jaq exception".to_owned(),
                    },
                };
                *state = Progress::Failed(reason);
                return;
            }
        }
    }
}

/// `$ENV`: the process environment as an object, as the jaq CLI binds it. Entries that are
/// not UTF-8 are converted lossily rather than dropped, so `$ENV | has("X")` matches `env`.
fn env_object() -> Val {
    let map: jaq_json::Map = std::env::vars_os()
        .map(|(k, v)| {
            let k = k.to_string_lossy().into_owned();
            let v = v.to_string_lossy().into_owned();
            (Val::from(k), Val::from(v))
        })
        .collect();
    Val::obj(map)
}

/// A run-time error as jq shows it: a string error's text raw, anything else as JSON.
fn error_text(err: jaq_core::Error<Val>) -> String {
    // Typed errors such as "cannot index ... with ..." embed whole values; formatting them
    // fully could mean hundreds of MiB for a big document, so format a bounded prefix first.
    let shown = bounded_display(&err);
    if !shown.starts_with('"') {
        return one_line(shown.as_bytes(), QUOTE_CHARS);
    }
    // Most likely `error("text")` or a library error built from a string: show it unquoted.
    match err.into_val() {
        Val::TStr(bytes) => one_line(&bytes, QUOTE_CHARS),
        other => quote_val(&other),
    }
}

/// A value as compact JSON, shortened to one line of about [`QUOTE_CHARS`] characters.
fn quote_val(v: &Val) -> String {
    let shown = bounded_display(v);
    one_line(shown.as_bytes(), QUOTE_CHARS)
}

/// The start of `x`'s `Display`, stopping a little past what a reason can show.
fn bounded_display(x: &impl fmt::Display) -> String {
    let mut w = Bounded {
        out: String::new(),
        // Room for the longest UTF-8 character beyond the quoted length, so `one_line` can
        // tell that it truncated.
        limit: QUOTE_CHARS * 4 + 4,
    };
    // An error here only means the limit was reached; what was written is what we want.
    let _ = write!(w, "{x}");
    w.out
}

/// A `fmt::Write` that refuses to grow past `limit` bytes, ending the formatting early.
struct Bounded {
    out: String,
    limit: usize,
}

impl fmt::Write for Bounded {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.limit.saturating_sub(self.out.len());
        if s.len() <= room {
            self.out.push_str(s);
            return Ok(());
        }
        let mut end = room;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.out.push_str(&s[..end]);
        Err(fmt::Error)
    }
}

/// Bytes as one line of at most `max` characters: invalid UTF-8 replaced, control characters
/// escaped (reasons go into one-line log records), and "…" added when shortened.
fn one_line(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The helper request's first line.
#[derive(Serialize, Deserialize)]
struct Header {
    v: u32,
    mode: String,
    exprs: Vec<String>,
    attempt: u32,
    elapsed: f64,
}

/// The helper's one-line reply. `error` is set, and `results` empty, when the request itself
/// could not be read.
#[derive(Serialize, Deserialize)]
struct Response {
    results: Vec<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The helper request header: one JSON line
/// `{"v":1,"mode":"until"|"retry_if","exprs":[...],"attempt":N,"elapsed":F}` and its `'\n'`.
/// The caller writes the raw input bytes after it and then closes the helper's stdin.
pub fn request_header(preds: &[Predicate], mode: Mode, attempt: u32, elapsed: f64) -> Vec<u8> {
    let header = Header {
        v: PROTOCOL_VERSION,
        mode: mode.wire_name().to_owned(),
        exprs: preds.iter().map(|p| p.source.clone()).collect(),
        attempt,
        // JSON has no NaN or infinity (serde_json would write `null`, which then fails to
        // read back as a float); the clock never produces them, so clamping is only a guard.
        elapsed: if elapsed.is_finite() {
            elapsed
        } else if elapsed > 0.0 {
            f64::MAX
        } else {
            0.0
        },
    };
    // Serialising strings and finite numbers cannot fail; were it to, an empty header makes
    // the helper report a malformed request instead of this process panicking.
    let mut line = serde_json::to_vec(&header).unwrap_or_default();
    line.push(b'\n');
    line
}

/// Decode the helper's reply into `count` judgements. An `Err` says why the reply is unusable
/// (the caller reports "predicate helper failed: ...").
pub fn parse_response(bytes: &[u8], count: usize) -> Result<Vec<Judgement>, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err("no reply".to_owned());
    }
    let response: Response = serde_json::from_slice(bytes).map_err(|e| format!("malformed reply: {e}"))?;
    if let Some(error) = response.error {
        return Err(error);
    }
    if response.results.len() != count {
        return Err(format!("expected {count} results, got {}", response.results.len()));
    }
    Ok(response.results)
}

/// The helper process's `main` (argv\[1\] is [`HELPER_ARG`]): read the request from stdin,
/// evaluate, write one reply line to stdout, exit 0.
pub fn helper_main() -> u8 {
    let mut request = Vec::new();
    let reply = match std::io::stdin().lock().read_to_end(&mut request) {
        Ok(_) => helper_reply(&request),
        Err(e) => error_reply(&format!("cannot read request: {e}")),
    };
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(&reply).and_then(|()| stdout.flush()) {
        Ok(()) => 0,
        // The parent sees a missing reply and reports it; there is nobody else to tell.
        Err(_) => 1,
    }
}

/// The helper's work on an in-memory request: request bytes in, reply line out.
fn helper_reply(request: &[u8]) -> Vec<u8> {
    let Some(newline) = request.iter().position(|&b| b == b'\n') else {
        return error_reply("malformed request: no header line");
    };
    let (header, input) = (&request[..newline], &request[newline + 1..]);
    let header: Header = match serde_json::from_slice(header) {
        Ok(header) => header,
        Err(e) => return error_reply(&format!("malformed request: {e}")),
    };
    if header.v != PROTOCOL_VERSION {
        return error_reply(&format!("unsupported request version {}", header.v));
    }
    let Some(mode) = Mode::from_wire_name(&header.mode) else {
        return error_reply(&format!("unknown mode '{}'", header.mode));
    };

    // The parent compiled these same expressions already, so a failure here is a bug; it is
    // reported per predicate rather than failing the whole reply.
    let mut results: Vec<Judgement> = vec![None; header.exprs.len()];
    let mut compiled = Vec::new();
    let mut slots = Vec::new();
    for (i, expr) in header.exprs.iter().enumerate() {
        match Predicate::compile(expr) {
            Ok(pred) => {
                compiled.push(pred);
                slots.push(i);
            }
            Err(e) => results[i] = Some(format!("internal error: helper cannot compile: {e}")),
        }
    }
    let judged = evaluate(&compiled, mode, input, header.attempt, header.elapsed);
    for (slot, judgement) in slots.into_iter().zip(judged) {
        results[slot] = judgement;
    }
    encode_reply(&Response { results, error: None })
}

fn error_reply(error: &str) -> Vec<u8> {
    encode_reply(&Response { results: Vec::new(), error: Some(error.to_owned()) })
}

fn encode_reply(response: &Response) -> Vec<u8> {
    // Serialising strings cannot fail; an empty reply still makes the parent report an error.
    let mut line = serde_json::to_vec(response).unwrap_or_default();
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pred(src: &str) -> Predicate {
        match Predicate::compile(src) {
            Ok(p) => p,
            Err(e) => panic!("{src:?} should compile: {e}"),
        }
    }

    fn until(src: &str, stdout: &str) -> Judgement {
        evaluate(&[pred(src)], Mode::Until, stdout.as_bytes(), 1, 0.5).pop().flatten()
    }

    #[test]
    fn compile_errors_give_message_and_position() {
        let cases: &[(&str, &str)] = &[
            ("(.a", "unexpected end of input, expected closing parenthesis at line 1, column 4"),
            (".foo | ", "unexpected end of input, expected term at line 1, column 8"),
            ("if . then 1", "unexpected end of input, expected else or end at line 1, column 12"),
            ("foo", "undefined filter 'foo/0' at line 1, column 1"),
            (".a |\n  bar(1)", "undefined filter 'bar/1' at line 2, column 3"),
            (". == $nope", "undefined variable '$nope' at line 1, column 6"),
            ("[1 }", "unexpected '}', expected closing bracket at line 1, column 4"),
            ("\"abc", "unexpected end of input, expected closing quote at line 1, column 5"),
            ("import \"data\" as $d; $d", "data imports are not supported: \"data\" at line 1, column 9"),
            ("include \"m\"; .", "module loading not supported: \"m\" at line 1, column 10"),
        ];
        for (src, want) in cases {
            match Predicate::compile(src) {
                Ok(_) => panic!("{src:?} should not compile"),
                Err(e) => assert_eq!(e.to_string(), *want, "for {src:?}"),
            }
        }
    }

    #[test]
    fn compile_error_fields_are_one_based_character_columns() {
        let e = Predicate::compile("\"é\" | nope").expect_err("nope is undefined");
        assert_eq!((e.line, e.column), (1, 7));
        assert_eq!(e.message, "undefined filter 'nope/0'");
    }

    #[test]
    fn predicate_keeps_source_and_is_send_sync() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        let p = pred(".ok");
        send_sync(&p);
        assert_eq!(p.source(), ".ok");
    }

    #[test]
    fn truthiness_follows_jq() {
        let cases: &[(&str, &str, Judgement)] = &[
            (".", "true", None),
            (".", "false", Some("last output was false".into())),
            (".", "null", Some("last output was null".into())),
            (".", "0", None),
            (".", "\"\"", None),
            (".", "[]", None),
            (".a", "{}", Some("last output was null".into())),
            (".status == \"ok\"", r#"{"status":"ok"}"#, None),
            ("empty", "{}", Some("no output".into())),
            (".[]", "[true, false]", Some("last output was false".into())),
            (".[]", "[false, 1]", None),
            // Side effects only: both go to the `log` crate, which has no logger here.
            ("stderr | debug | true", "\"noise\"", None),
        ];
        for (src, stdout, want) in cases {
            assert_eq!(until(src, stdout), *want, "{src:?} on {stdout:?}");
        }
    }

    #[test]
    fn last_value_of_a_stream_decides() {
        let cases: &[(&str, &str, Judgement)] = &[
            (".ok", "{\"ok\":true}\n{\"ok\":false}\n", Some("last output was false".into())),
            (".ok", "{\"ok\":false}\n{\"ok\":true}\n", None),
            (".a == 2", r#"{"a":1} {"a":2}"#, None),
            (".a == 1", r#"{"a":1}{"a":2}"#, Some("last output was false".into())),
            // A later value with no output leaves the earlier last output in charge.
            ("select(.a == 1) | true", "{\"a\":1}\n{\"a\":2}", None),
        ];
        for (src, stdout, want) in cases {
            assert_eq!(until(src, stdout), *want, "{src:?} on {stdout:?}");
        }
    }

    #[test]
    fn bad_stdout_fails_with_a_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "stdout is empty"),
            (b" \n\t\r\n", "stdout is empty"),
            (b"hello", "stdout is not JSON: expected value at line 1 column 1"),
            (b"{\"a\":1}\nnope", "stdout is not JSON: expected ident at line 2 column 2"),
            (b"\"\xff\xfe\"", "stdout is not JSON: invalid unicode code point at line 1 column 2"),
        ];
        for (stdout, want) in cases {
            let got = evaluate(&[pred("true")], Mode::Until, stdout, 1, 0.0);
            assert_eq!(got, vec![Some((*want).to_owned())], "on {stdout:?}");
        }
    }

    #[test]
    fn runtime_errors_and_halts_fail_without_ending_the_process() {
        let cases: &[(&str, &str, &str)] = &[
            (".status", "1", "error: cannot index 1 with \"status\""),
            ("error(\"boom\")", "1", "error: boom"),
            ("error({\"a\":1})", "1", "error: {\"a\":1}"),
            ("error(\"two\\nlines\")", "1", "error: two\\nlines"),
            ("true, error(\"late\")", "1", "error: late"),
            ("true, halt_error(7)", "1", "halted with exit code 7"),
            ("halt", "1", "halted with exit code 0"),
        ];
        for (src, stdout, want) in cases {
            assert_eq!(until(src, stdout), Some((*want).to_owned()), "{src:?}");
        }
    }

    #[test]
    fn long_values_are_quoted_short() {
        let big = format!("[\"{}\"]", "x".repeat(10_000));
        let reason = until(".[0] | error", &big).expect("error() fails");
        assert!(reason.len() < 200, "{reason}");
        assert!(reason.ends_with('…'), "{reason}");
        let reason = until(".foo", &big).expect("indexing an array with a key fails");
        assert!(reason.starts_with("error: cannot index [\"xxx"), "{reason}");
        assert!(reason.chars().count() <= 108, "{reason}");
    }

    #[test]
    fn variables_are_bound() {
        let relaxed = pred(".n >= 5 or $attempt >= 3");
        let judge =
            |attempt| evaluate(std::slice::from_ref(&relaxed), Mode::Until, b"{\"n\":1}", attempt, 0.0);
        assert_eq!(judge(1), vec![Some("last output was false".to_owned())]);
        assert_eq!(judge(3), vec![None]);

        let cases: &[&str] = &[
            "$elapsed | type == \"number\"",
            "$elapsed == 2.5",
            "$attempt == 4",
            "$ENV.PATH | type == \"string\"",
            "$ENV | type == \"object\"",
        ];
        let preds: Vec<Predicate> = cases.iter().map(|s| pred(s)).collect();
        // PATH is set wherever cargo runs tests.
        let got = evaluate(&preds, Mode::Until, b"null", 4, 2.5);
        assert_eq!(got, vec![None; cases.len()], "{cases:?}");
    }

    #[test]
    fn several_predicates_are_judged_in_order() {
        let preds = [pred(".a == 1"), pred(".b"), pred(".c"), pred(".a.x")];
        let got = evaluate(&preds, Mode::Until, br#"{"a":1,"b":false,"c":"yes"}"#, 1, 0.0);
        assert_eq!(
            got,
            vec![
                None,
                Some("last output was false".to_owned()),
                None,
                Some("error: cannot index 1 with \"x\"".to_owned()),
            ]
        );
        assert!(evaluate(&[], Mode::Until, b"1", 1, 0.0).is_empty());
    }

    #[test]
    fn retry_if_reads_the_context_object() {
        let p = pred(r#".status == 7 and (.stderr | test("timeout"))"#);
        let ctx = |status: i32, stderr: &str| {
            serde_json::json!({
                "attempt": 2, "status": status, "exit_code": status, "signal": null,
                "timed_out": false, "elapsed": 3.2, "duration": 1.1, "stdout": null,
                "stderr": stderr, "validation": [],
            })
            .to_string()
        };
        let judge = |c: String| evaluate(std::slice::from_ref(&p), Mode::RetryIf, c.as_bytes(), 2, 3.2);
        assert_eq!(judge(ctx(7, "read timeout\n")), vec![None]);
        assert_eq!(judge(ctx(7, "refused")), vec![Some("last output was false".to_owned())]);
        assert_eq!(
            evaluate(std::slice::from_ref(&p), Mode::RetryIf, b"", 1, 0.0),
            vec![Some("context is empty".to_owned())]
        );
    }

    #[test]
    fn deeply_nested_input_parses() {
        let depth = 10_000;
        let doc = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let got = evaluate(&[pred("length == 1")], Mode::Until, doc.as_bytes(), 1, 0.0);
        assert_eq!(got, vec![None]);
    }

    #[test]
    fn request_header_round_trips_through_the_helper() {
        let preds = [pred(".ok"), pred("$attempt >= 2"), pred("$elapsed > 1")];
        let mut request = request_header(&preds, Mode::Until, 2, 1.5);
        assert_eq!(request.iter().filter(|&&b| b == b'\n').count(), 1);
        let header: serde_json::Value = serde_json::from_slice(&request).expect("the header is JSON");
        assert_eq!(
            header,
            serde_json::json!({"v": 1, "mode": "until", "exprs": [".ok", "$attempt >= 2",
                "$elapsed > 1"], "attempt": 2, "elapsed": 1.5})
        );
        request.extend_from_slice(b"{\"ok\":true}\n{\"ok\":false}\n");
        let reply = helper_reply(&request);
        assert_eq!(reply.last(), Some(&b'\n'));
        assert_eq!(reply.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(
            parse_response(&reply, preds.len()),
            Ok(vec![Some("last output was false".to_owned()), None, None])
        );
    }

    #[test]
    fn helper_reports_bad_requests_and_bad_expressions() {
        let mut request = request_header(&[pred(".")], Mode::RetryIf, 1, 0.0);
        request.extend_from_slice(b"{}");
        assert_eq!(parse_response(&helper_reply(&request), 1), Ok(vec![None]));

        let bad_expr = br#"{"v":1,"mode":"until","exprs":["(", "true"],"attempt":1,"elapsed":0}
1"#;
        let got = parse_response(&helper_reply(bad_expr), 2).expect("a reply per predicate");
        assert!(
            got[0].as_deref().is_some_and(|r| r.starts_with("internal error: helper cannot compile")),
            "{got:?}"
        );
        assert_eq!(got[1], None);

        let cases: &[(&[u8], &str)] = &[
            (b"", "malformed request: no header line"),
            (b"{}\n", "malformed request: missing field `v` at line 1 column 2"),
            (
                br#"{"v":2,"mode":"until","exprs":[],"attempt":1,"elapsed":0}"#,
                "malformed request: no header line",
            ),
            (
                b"{\"v\":2,\"mode\":\"until\",\"exprs\":[],\"attempt\":1,\"elapsed\":0}\n",
                "unsupported request version 2",
            ),
            (b"{\"v\":1,\"mode\":\"x\",\"exprs\":[],\"attempt\":1,\"elapsed\":0}\n", "unknown mode 'x'"),
        ];
        for (request, want) in cases {
            assert_eq!(parse_response(&helper_reply(request), 0), Err((*want).to_owned()), "{request:?}");
        }
    }

    #[test]
    fn parse_response_rejects_malformed_replies() {
        type Decoded = Result<Vec<Judgement>, String>;
        let cases: &[(&[u8], usize, Decoded)] = &[
            (b"{\"results\":[null,\"no\"]}\n", 2, Ok(vec![None, Some("no".into())])),
            (b"", 1, Err("no reply".into())),
            (b"{\"results\":[null]}\n", 2, Err("expected 2 results, got 1".into())),
            (b"garbage", 1, Err("malformed reply: expected value at line 1 column 1".into())),
            (b"{\"results\":[],\"error\":\"bad\"}", 0, Err("bad".into())),
        ];
        for (bytes, count, want) in cases {
            assert_eq!(parse_response(bytes, *count), *want, "{bytes:?}");
        }
    }

    #[test]
    fn non_finite_elapsed_still_makes_a_readable_header() {
        for elapsed in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut request = request_header(&[pred("$elapsed >= 0")], Mode::Until, 1, elapsed);
            request.extend_from_slice(b"1");
            assert_eq!(parse_response(&helper_reply(&request), 1), Ok(vec![None]));
        }
    }
}
