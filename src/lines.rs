//! Matching a stream rule (`--retry-on-stdout`, `--until-match`, ...) on
//! the lines of a stream without going line by line, as grep-like tools
//! do, and without a cap on the length of a line.
//!
//! A rule matches a line when its regex matches the line alone (without
//! its `\n`): `^` and `$` are the line's ends, and nothing matches across
//! lines. [`LineRegex`] keeps the regex as given for single lines, and
//! builds from the same syntax tree a regex that is safe to run over many
//! lines at once: `^`/`$` (and `\A`/`\z`) become line anchors, and `\n` is
//! taken out of every class and literal, so a match can never span lines
//! and matches some line exactly when the regex as given matches that line
//! alone. One search then covers all the complete lines of a chunk, with
//! the regex crate's literal prefilters. The few regexes it cannot be built
//! for (CRLF-mode anchors, `(?Rm)`, or over the size limit) are matched
//! line by line, as before.
//!
//! A line longer than the scanner's window is not held: it streams through
//! a lazy DFA of the line-safe regex (regex-automata's, bounded memory),
//! fed chunk by chunk from the line's start, so a match anywhere in a line
//! of any length is found. Where the lazy DFA cannot run the regex (a
//! Unicode word boundary meeting non-ASCII bytes, which makes it give up),
//! that line is matched in window-sized pieces instead.

use regex::bytes::Regex;
use regex_automata::hybrid::LazyStateID;
use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::nfa::thompson;
use regex_automata::util::{start, syntax};
use regex_automata::{Anchored, meta};
use regex_syntax::hir::{self, Class, Hir, HirKind, Look};

/// The regex crate's limits (`regex::bytes::RegexBuilder` defaults), so a
/// regex that compiled as given also compiles line-safe.
const NFA_SIZE_LIMIT: usize = 10 << 20;
const CACHE_CAPACITY: usize = 2 << 20;

/// One rule's regex, for the lines of a stream.
pub struct LineRegex {
    /// As given: for one line at a time, and for a hint's capture group.
    pub line: Regex,
    /// Line-safe: for many complete lines at once.
    many: Option<meta::Regex>,
    /// The line-safe syntax tree, for the lazy DFA of a long line.
    hir: Option<Hir>,
    stream: Stream,
}

/// The lazy DFA of a rule, built at the first line longer than the window.
enum Stream {
    NotBuilt,
    /// No lazy DFA for this regex: long lines are matched in pieces.
    Unavailable,
    Built(Box<Streaming>),
}

struct Streaming {
    dfa: DFA,
    cache: Cache,
    state: LazyStateID,
    /// Where the current long line stands.
    status: Status,
}

/// The state of a long line's search.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Still searching.
    Running,
    /// The line matches.
    Matched,
    /// No match can start or end later in this line.
    Dead,
    /// The lazy DFA gave up on this line: match it in pieces.
    GaveUp,
}

impl LineRegex {
    pub fn new(line: Regex) -> LineRegex {
        let hir = line_safe_hir(line.as_str());
        let many = hir.as_ref().and_then(|h| {
            meta::Regex::builder()
                .configure(
                    meta::Config::new()
                        .nfa_size_limit(Some(NFA_SIZE_LIMIT))
                        .hybrid_cache_capacity(CACHE_CAPACITY)
                        .utf8_empty(false),
                )
                .build_from_hir(h)
                .ok()
        });
        LineRegex { line, many, hir, stream: Stream::NotBuilt }
    }

    /// Does the regex match one of `lines` (complete lines joined by `\n`,
    /// without the last one's)?
    pub fn any_line(&self, lines: &[u8]) -> bool {
        match &self.many {
            Some(many) => many.is_match(lines),
            None => lines.split(|&b| b == b'\n').any(|l| self.line.is_match(l)),
        }
    }

    /// Where the last of `lines` that the regex matches begins.
    pub fn last_line(&self, lines: &[u8]) -> Option<usize> {
        let line_start = |at: usize| memchr::memrchr(b'\n', &lines[..at]).map_or(0, |i| i + 1);
        match &self.many {
            // A match never spans lines, and after one in line k the
            // search goes on in line k (or after it): the last match found
            // lies in the last line that matches.
            Some(many) => many.find_iter(lines).last().map(|m| line_start(m.start())),
            None => {
                let mut end = lines.len();
                loop {
                    let start = line_start(end);
                    if self.line.is_match(&lines[start..end]) {
                        return Some(start);
                    }
                    if start == 0 {
                        return None;
                    }
                    end = start - 1;
                }
            }
        }
    }

    /// A line longer than the window begins: its bytes go to
    /// [`LineRegex::stream`] from now on. False when this regex has no lazy
    /// DFA (its long lines are matched in pieces).
    pub fn start_long_line(&mut self) -> bool {
        if let Stream::NotBuilt = self.stream {
            self.stream = match self.hir.as_ref().and_then(build_dfa) {
                Some(dfa) => {
                    let cache = dfa.create_cache();
                    Stream::Built(Box::new(Streaming {
                        dfa,
                        cache,
                        state: LazyStateID::default(),
                        status: Status::GaveUp,
                    }))
                }
                None => Stream::Unavailable,
            };
        }
        let Stream::Built(s) = &mut self.stream else { return false };
        // No look-behind byte: the start of a line, where `^` matches.
        let config = start::Config::new().anchored(Anchored::No);
        match s.dfa.start_state(&mut s.cache, &config) {
            Ok(state) => {
                s.state = state;
                s.status = Status::Running;
            }
            Err(_) => s.status = Status::GaveUp,
        }
        s.status == Status::Running
    }

    /// Feeds the next bytes of the long line (no `\n` among them).
    pub fn stream(&mut self, bytes: &[u8]) -> Status {
        let Stream::Built(s) = &mut self.stream else { return Status::GaveUp };
        if s.status != Status::Running {
            return s.status;
        }
        let mut state = s.state;
        for &b in bytes {
            state = match s.dfa.next_state(&mut s.cache, state, b) {
                Ok(next) => next,
                Err(_) => {
                    s.status = Status::GaveUp;
                    return s.status;
                }
            };
            if state.is_tagged() {
                // Matches show one byte late, so `state` is the match seen
                // up to the byte before `b`: still within the line.
                s.status = if state.is_match() {
                    Status::Matched
                } else if state.is_dead() {
                    Status::Dead
                } else if state.is_quit() {
                    Status::GaveUp
                } else {
                    Status::Running
                };
                if s.status != Status::Running {
                    return s.status;
                }
            }
        }
        s.state = state;
        Status::Running
    }

    /// The long line ended (at a `\n` or the end of the stream): its last
    /// verdict. `$` matches here.
    pub fn end_long_line(&mut self) -> Status {
        let Stream::Built(s) = &mut self.stream else { return Status::GaveUp };
        if s.status == Status::Running {
            s.status = match s.dfa.next_eoi_state(&mut s.cache, s.state) {
                Ok(state) if state.is_match() => Status::Matched,
                Ok(_) => Status::Dead,
                Err(_) => Status::GaveUp,
            };
        }
        let status = s.status;
        s.status = Status::GaveUp;
        status
    }
}

/// The syntax tree of `pattern` as `regex::bytes::Regex` parses it, made
/// line-safe; `None` when that cannot be done.
fn line_safe_hir(pattern: &str) -> Option<Hir> {
    let hir = syntax::parse_with(pattern, &syntax::Config::new().utf8(false)).ok()?;
    line_safe(&hir)
}

/// `hir` with its haystack anchors turned into line anchors and `\n` taken
/// out of what it matches (see the module's doc). CRLF-mode line anchors
/// (`(?Rm)`) refuse: between `\r` and `\n` they differ from a line's end.
fn line_safe(h: &Hir) -> Option<Hir> {
    Some(match h.kind() {
        HirKind::Empty => Hir::empty(),
        HirKind::Literal(hir::Literal(bytes)) => {
            if bytes.contains(&b'\n') {
                Hir::fail()
            } else {
                h.clone()
            }
        }
        HirKind::Class(Class::Unicode(c)) => {
            let mut c = c.clone();
            c.difference(&hir::ClassUnicode::new([hir::ClassUnicodeRange::new('\n', '\n')]));
            Hir::class(Class::Unicode(c))
        }
        HirKind::Class(Class::Bytes(c)) => {
            let mut c = c.clone();
            c.difference(&hir::ClassBytes::new([hir::ClassBytesRange::new(b'\n', b'\n')]));
            Hir::class(Class::Bytes(c))
        }
        HirKind::Look(look) => match look {
            Look::Start => Hir::look(Look::StartLF),
            Look::End => Hir::look(Look::EndLF),
            Look::StartCRLF | Look::EndCRLF => return None,
            _ => h.clone(),
        },
        HirKind::Repetition(rep) => {
            Hir::repetition(hir::Repetition { sub: Box::new(line_safe(&rep.sub)?), ..rep.clone() })
        }
        HirKind::Capture(cap) => {
            Hir::capture(hir::Capture { sub: Box::new(line_safe(&cap.sub)?), ..cap.clone() })
        }
        HirKind::Concat(subs) => Hir::concat(subs.iter().map(line_safe).collect::<Option<_>>()?),
        HirKind::Alternation(subs) => Hir::alternation(subs.iter().map(line_safe).collect::<Option<_>>()?),
    })
}

/// The lazy DFA for a long line's search, or `None` (too big, or a regex
/// it cannot run).
fn build_dfa(hir: &Hir) -> Option<DFA> {
    let nfa = thompson::Compiler::new()
        .configure(
            thompson::Config::new()
                .nfa_size_limit(Some(NFA_SIZE_LIMIT))
                .which_captures(thompson::WhichCaptures::None),
        )
        .build_from_hir(hir)
        .ok()?;
    DFA::builder()
        .configure(
            DFA::config()
                .cache_capacity(CACHE_CAPACITY)
                // A Unicode \b gives up on non-ASCII bytes instead of
                // refusing to build.
                .unicode_word_boundary(true),
        )
        .build_from_nfa(nfa)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re(p: &str) -> LineRegex {
        LineRegex::new(Regex::new(p).unwrap())
    }

    /// Over many lines at once, exactly as line by line.
    #[test]
    fn many_lines_match_as_each_line_alone() {
        let texts: [&[u8]; 8] =
            [b"a\nb\nc", b"ab\n\nc d", b"", b"\n", b"x\ny\n", b"foo bar\nbaz", b"a\r\nb", b"\xff\x00ok\nz"];
        let patterns = [
            "^b$",
            "a\\sb",
            "a\\nb",
            "(?s)a.b",
            "a[^x]b",
            "^$",
            "x*",
            "\\Ab\\z",
            "(?m)^c",
            "b$",
            "\\bbar\\b",
            "(?-u)\\xff\\x00ok",
            "^a\\r$",
            "(?Rm)^b",
            "d$|^f",
            "[\\s\\S]{3}",
        ];
        for p in patterns {
            let r = re(p);
            for t in texts {
                let by_line = t.split(|&b| b == b'\n').any(|l| r.line.is_match(l));
                assert_eq!(r.any_line(t), by_line, "{p:?} on {t:?}");
                let last = t
                    .split(|&b| b == b'\n')
                    .scan(0, |pos, l| {
                        let start = *pos;
                        *pos += l.len() + 1;
                        Some((start, l))
                    })
                    .filter(|(_, l)| r.line.is_match(l))
                    .map(|(s, _)| s)
                    .last();
                assert_eq!(r.last_line(t), last, "{p:?} on {t:?}");
            }
        }
        // CRLF-mode anchors stay line by line.
        assert!(re("(?Rm)^b").many.is_none());
        assert!(re("x").many.is_some());
    }

    #[test]
    fn a_long_line_streams_in_pieces() {
        let mut r = re("^a+NEEDLE$");
        assert!(r.start_long_line());
        for _ in 0..3 {
            assert_eq!(r.stream(&[b'a'; 1000]), Status::Running);
        }
        assert_eq!(r.stream(b"NEED"), Status::Running);
        assert_eq!(r.stream(b"LE"), Status::Running);
        assert_eq!(r.end_long_line(), Status::Matched, "$ at the line's end");
        // Not matched: something after the needle.
        assert!(r.start_long_line());
        r.stream(b"aaNEEDLE!");
        assert_ne!(r.end_long_line(), Status::Matched);
        // A match in the middle shows as soon as the next byte is read.
        let mut m = re("NEEDLE");
        assert!(m.start_long_line());
        assert_eq!(m.stream(b"xxNEEDL"), Status::Running);
        assert_eq!(m.stream(b"Ex"), Status::Matched);
        assert_eq!(m.end_long_line(), Status::Matched);
    }

    #[test]
    fn a_unicode_word_boundary_gives_up_on_non_ascii() {
        let mut r = re(r"\bword\b");
        assert!(r.start_long_line());
        assert_eq!(r.stream("é word".as_bytes()), Status::GaveUp);
        assert!(r.start_long_line());
        assert_eq!(r.stream(b"a word "), Status::Matched);
        assert!(!re(r"(?Rm)^b").start_long_line(), "no lazy DFA without a line-safe regex");
    }
}
