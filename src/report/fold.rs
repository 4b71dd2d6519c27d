//! Each attempt's output folded in a CI log: a GitHub Actions group
//! (`::group::retry: attempt 2/4` … `::endgroup::`) or a GitLab CI
//! collapsible section (`\e[0Ksection_start:<unix time>:<name>[collapsed=true]\r\e[0K<header>`
//! … `\e[0Ksection_end:<unix time>:<name>\r\e[0K`). The markers go to
//! stderr, the stream retry's own lines use: stdout belongs to the
//! command. Pure: [`Fold`] makes the lines, the reporter writes them.

use std::time::{SystemTime, UNIX_EPOCH};

use super::Format;

/// The fold of one run (or of one job in a drain).
#[derive(Debug)]
pub struct Fold {
    /// The GitLab name of the open section (`""` for a GitHub group).
    open: Option<String>,
    /// Makes this run's GitLab section names unique: two runs of retry in
    /// one job log must not share a name (GitLab would fold them as one).
    /// Drawn at the first section, so other formats draw nothing.
    token: Option<String>,
    /// The attempt whose section starts expanded: the last possible one
    /// (`None`: every section collapsed, e.g. with `--forever`).
    expand: Option<u32>,
}

impl Fold {
    pub fn new(expand: Option<u32>) -> Fold {
        Fold { open: None, token: None, expand }
    }

    /// The line that opens attempt `n`'s fold, titled `title`; `None` when
    /// the format folds nothing. An open fold is closed first.
    pub fn open(&mut self, format: Format, n: u32, title: &str, now: SystemTime) -> Option<String> {
        let mut out = self.close(format, now).unwrap_or_default();
        match format {
            Format::Github => {
                out.push_str(&format!("::group::{}\n", super::github::escape_data(title)));
                self.open = Some(String::new());
            }
            Format::Gitlab => {
                let token = self.token.get_or_insert_with(token);
                let name = format!("retry_attempt_{n}_{token}");
                let options = if self.expand == Some(n) { "" } else { "[collapsed=true]" };
                out.push_str(&format!(
                    "\x1b[0Ksection_start:{}:{name}{options}\r\x1b[0K{}\n",
                    unix(now),
                    one_line(title)
                ));
                self.open = Some(name);
            }
            Format::Text | Format::Json => return None,
        }
        Some(out)
    }

    /// The line that closes the open fold, if one is open.
    pub fn close(&mut self, format: Format, now: SystemTime) -> Option<String> {
        let name = self.open.take()?;
        match format {
            Format::Github => Some("::endgroup::\n".to_string()),
            Format::Gitlab => Some(format!("\x1b[0Ksection_end:{}:{name}\r\x1b[0K\n", unix(now))),
            Format::Text | Format::Json => None,
        }
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A header is one line: control characters become spaces.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// Eight hex digits from std's per-process random keys (no system call
/// after the first); a fresh value for each fold.
fn token() -> String {
    let h = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), std::process::id());
    format!("{:08x}", h as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gitlab_sections_are_collapsed_but_the_last_possible_one() {
        let now = UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        let mut fold = Fold::new(Some(2));
        let first = fold.open(Format::Gitlab, 1, "retry: attempt 1/2", now).unwrap();
        let token = fold.token.clone().unwrap();
        let name = format!("retry_attempt_1_{token}");
        assert_eq!(
            first,
            format!("\x1b[0Ksection_start:1700000000:{name}[collapsed=true]\r\x1b[0Kretry: attempt 1/2\n")
        );
        assert_eq!(
            fold.close(Format::Gitlab, now).unwrap(),
            format!("\x1b[0Ksection_end:1700000000:{name}\r\x1b[0K\n")
        );
        assert_eq!(fold.close(Format::Gitlab, now), None);
        let last = fold.open(Format::Gitlab, 2, "x\ny", now).unwrap();
        assert!(last.ends_with("\r\x1b[0Kx y\n") && last.contains(&format!("_2_{token}\r")), "{last:?}");
        assert!(last.contains("section_start:1700000000:retry_attempt_2_"), "{last:?}");
        let mut other = Fold::new(None);
        other.open(Format::Gitlab, 1, "t", now);
        assert_ne!(other.token, fold.token, "another run draws another token");
    }

    #[test]
    fn github_groups_escape_their_title_and_never_nest() {
        let now = SystemTime::now();
        let mut fold = Fold::new(None);
        assert_eq!(fold.open(Format::Github, 1, "50%\n", now).unwrap(), "::group::50%25%0A\n");
        assert_eq!(fold.open(Format::Github, 2, "b", now).unwrap(), "::endgroup::\n::group::b\n");
        assert_eq!(fold.open(Format::Text, 3, "c", now), None);
    }
}
