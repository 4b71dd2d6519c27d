//! Hostile file systems and crashes (issue 17): a queue directory swapped
//! under a drain, symlinks planted in the queue and the file store,
//! FIFOs, sockets, directories and devices where files belong, report
//! files that are FIFOs or devices, and drains killed at every write step
//! of a burial and a reschedule.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::Path;
use std::process::Command as StdCommand;
use std::time::{Duration, Instant};

use predicates::prelude::*;
use serde_json::Value;

use crate::util::*;

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid takes nothing and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn cstr(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

fn mkfifo(path: &Path) {
    // SAFETY: a valid C string and a mode.
    assert_eq!(unsafe { libc::mkfifo(cstr(path).as_ptr(), 0o600) }, 0, "mkfifo {path:?}");
}

/// A character device node like /dev/null (1,3) or /dev/full (1,7); only
/// root may make one.
fn mknod_char(path: &Path, minor: u32) -> bool {
    // SAFETY: a valid C string, a mode and a device number.
    is_root()
        && unsafe { libc::mknod(cstr(path).as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, minor)) } == 0
}

fn socket(path: &Path) {
    drop(std::os::unix::net::UnixListener::bind(path).unwrap());
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown_tree(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
    if std::fs::symlink_metadata(path).unwrap().is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path(), uid);
        }
    }
}

fn sh(script: &str) -> [String; 3] {
    ["sh".into(), "-c".into(), script.into()]
}

/// The ids of the `*.job` files in a directory, sorted.
fn ids_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.unwrap().file_name().to_str()?.strip_suffix(".job").map(String::from))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Names in a directory that start with `prefix`.
fn named(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.unwrap().file_name().to_str().map(String::from))
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// `retry --list q`, parsed; it must end, in bounded time, with 0.
fn list(t: &T, q: &Path) -> Vec<Value> {
    let out = t.retry().timeout(Duration::from_secs(20)).args(["--list", path_str(q)]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn listed<'a>(items: &'a [Value], id: &str) -> Vec<&'a Value> {
    items.iter().filter(|i| i["id"] == id).collect()
}

/// Queues `script` into `q` with `opts`; returns the new job's id.
fn enqueue(t: &T, q: &Path, opts: &[&str], script: &str) -> String {
    let before = ids_in(q);
    t.retry().args(["--queue", path_str(q)]).args(opts).arg("--").args(sh(script)).assert().code(75);
    let after = ids_in(q);
    let new: Vec<&String> = after.iter().filter(|id| !before.contains(id)).collect();
    assert_eq!(new.len(), 1, "{after:?}");
    new[0].clone()
}

/// `retry` as `nobody`, in a sandbox nobody can enter.
fn retry_as_nobody(t: &T) -> assert_cmd::Command {
    chmod(t.dir.path(), 0o755);
    let mut std = StdCommand::new(bin());
    t.env(&mut std);
    std.env("TMPDIR", "/tmp").uid(NOBODY).gid(NOBODY);
    let mut cmd = assert_cmd::Command::from_std(std);
    cmd.write_stdin("").timeout(Duration::from_secs(20));
    cmd
}

// ---------------------------------------------------------------------
// 1. The queue directory swapped for an attacker's.

/// A process running as `nobody` that exchanges `a` and `b` (renameat2
/// with RENAME_EXCHANGE) as fast as it can until it is killed.
fn swapper(a: &Path, b: &Path) -> libc::pid_t {
    let (a, b) = (cstr(a), cstr(b));
    // SAFETY: the child only makes system calls on memory prepared before
    // the fork (no allocation, no locks), then dies by the parent's SIGKILL.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork");
        if pid == 0 {
            let id = NOBODY as libc::uid_t;
            if libc::setresgid(id, id, id) != 0 || libc::setresuid(id, id, id) != 0 {
                libc::_exit(1);
            }
            // A pause between swaps lets the drains run between them
            // even on a loaded machine (a spinning swapper is often
            // descheduled for a whole drain).
            let pause = libc::timespec { tv_sec: 0, tv_nsec: 100_000 };
            loop {
                libc::nanosleep(&pause, std::ptr::null_mut());
                libc::syscall(
                    libc::SYS_renameat2,
                    libc::AT_FDCWD,
                    a.as_ptr(),
                    libc::AT_FDCWD,
                    b.as_ptr(),
                    libc::RENAME_EXCHANGE,
                );
            }
        }
        pid
    }
}

#[test]
fn a_queue_dir_swapped_for_an_attackers_never_runs_the_planted_job() {
    if !is_root() {
        eprintln!("skipped: the swap race needs root (a drain as root, an attacker as nobody)");
        return;
    }
    let t = T::new();
    chmod(t.dir.path(), 0o755);
    // The attacker may write the queue's parent, not the queue.
    let parent = t.path("parent");
    std::fs::create_dir(&parent).unwrap();
    let q = parent.join("q");
    enqueue(&t, &q, &["-n", "0", "--wait", "0"], "echo ran >> \"$HOME/legit\"; exit 1");
    chown_tree(&parent, NOBODY);
    chown_tree(&q, 0);
    // The attacker's queue: a valid job (queued elsewhere, then handed over).
    let pwned = t.path("pwned");
    let staging = t.path("staging");
    let planted = format!("[ \"$RETRY_ATTEMPT\" -ge 2 ] && id -u >> {}; exit 1", path_str(&pwned));
    enqueue(&t, &staging, &["-n", "0", "--wait", "0"], &planted);
    assert!(!pwned.exists());
    let evil = parent.join("evil");
    std::fs::rename(&staging, &evil).unwrap();
    chown_tree(&evil, NOBODY);
    let pid = swapper(&q, &evil);
    let start = Instant::now();
    let (mut drains, mut refused, mut other) = (0, 0, Vec::new());
    while drains < 20 || (start.elapsed() < Duration::from_secs(2) && drains < 200) {
        let out = t.retry().args(["--drain", path_str(&q)]).output().unwrap();
        drains += 1;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        match out.status.code() {
            Some(125) if stderr.contains("owned by uid 65534, not by you") => refused += 1,
            Some(0 | 75) => {}
            _ => other.push(stderr),
        }
    }
    kill(pid as u32, libc::SIGKILL);
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    assert!(
        !pwned.exists(),
        "the planted job ran as {:?} ({drains} drains, {refused} refused the swapped directory)",
        t.lines("pwned")
    );
    assert!(other.is_empty(), "drains that failed otherwise: {other:?}");
    eprintln!("{drains} drains, {refused} refused the attacker's directory, {} ran the job", t.runs("legit"));
}

// ---------------------------------------------------------------------
// 2. state/ and dead/ are checked before any job runs; symlinks in state/.

#[test]
fn a_drain_refuses_an_untrusted_state_or_dead_dir_before_running_any_job() {
    let t = T::new();
    let q = t.path("q");
    enqueue(&t, &q, &["-n", "0", "--wait", "0"], "echo ran >> \"$HOME/runs\"; exit 1");
    assert_eq!(t.runs("runs"), 1);
    for (name, mode) in [("dead", 0o777), ("state", 0o722)] {
        let dir = q.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        chmod(&dir, mode);
        t.retry()
            .args(["--drain", path_str(&q)])
            .assert()
            .code(125)
            .stderr(predicate::str::contains(format!("refusing the queue directory '{}'", dir.display())))
            .stderr(predicate::str::contains(format!("writable by group or others (mode {mode:04o})")));
        assert_eq!(t.runs("runs"), 1, "no job ran with an insecure {name}/");
        chmod(&dir, 0o700);
    }
    // A symlink as dead/ is refused, not followed.
    std::fs::remove_dir(q.join("dead")).unwrap();
    std::fs::create_dir(t.path("elsewhere")).unwrap();
    chmod(&t.path("elsewhere"), 0o700);
    std::os::unix::fs::symlink(t.path("elsewhere"), q.join("dead")).unwrap();
    t.retry()
        .args(["--drain", path_str(&q)])
        .assert()
        .code(125)
        .stderr(predicate::str::contains("it is a symbolic link"));
    t.retry().args(["--list", path_str(&q)]).assert().code(125);
    assert_eq!(t.runs("runs"), 1);
    std::fs::remove_file(q.join("dead")).unwrap();
    if is_root() {
        chown_tree(&q.join("state"), NOBODY);
        t.retry()
            .args(["--drain", path_str(&q)])
            .assert()
            .code(125)
            .stderr(predicate::str::contains("owned by uid 65534, not by you"));
        assert_eq!(t.runs("runs"), 1);
        chown_tree(&q.join("state"), 0);
    }
    t.retry().args(["--drain", path_str(&q)]).assert().code(75);
    assert_eq!(t.runs("runs"), 2);
}

#[test]
fn a_job_whose_state_dir_or_stdin_is_not_what_it_should_be_is_buried_not_followed() {
    let t = T::new();
    let q = t.path("q");
    let writes = enqueue(
        &t,
        &q,
        &["-n", "0", "--wait", "0", "--temp-state"],
        "[ \"$RETRY_ATTEMPT\" -ge 2 ] && echo owned > \"$RETRY_STATE_DIR/x\"; exit 1",
    );
    let reads = enqueue(&t, &q, &["--stdin", "replay", "-n", "0", "--wait", "0"], "cat > /dev/null; exit 1");
    // Another user's directory, and a FIFO nobody writes.
    let victim = t.path("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::remove_dir(q.join("state").join(&writes)).unwrap();
    std::os::unix::fs::symlink(&victim, q.join("state").join(&writes)).unwrap();
    std::fs::remove_file(q.join(format!("{reads}.stdin"))).unwrap();
    mkfifo(&q.join(format!("{reads}.stdin")));
    t.retry()
        .timeout(Duration::from_secs(20))
        .args(["--drain", path_str(&q)])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!("job {writes}: moved to dead/: its state directory")))
        .stderr(predicate::str::contains("is refused: it is a symbolic link"))
        .stderr(predicate::str::contains(format!(
            "job {reads}: moved to dead/: its recorded stdin is unreadable: it is not a regular file but a FIFO"
        )));
    assert!(!victim.join("x").exists(), "the job wrote through the symlink");
    assert_eq!(ids_in(&q), Vec::<String>::new());
    assert_eq!(ids_in(&q.join("dead")), {
        let mut v = vec![writes.clone(), reads.clone()];
        v.sort();
        v
    });
}

// ---------------------------------------------------------------------
// 3. --state-dir gets the store's checks.

#[test]
fn state_dir_is_refused_when_others_could_write_it_or_it_is_a_symlink() {
    let t = T::new();
    let dir = t.path("st");
    std::fs::create_dir(&dir).unwrap();
    let run = |path: &Path| {
        let mut cmd = t.retry();
        cmd.args(["--state-dir", path_str(path), "--"]).args(sh("echo ran >> \"$HOME/runs\""));
        cmd
    };
    chmod(&dir, 0o777);
    run(&dir).assert().code(125).stderr(predicate::str::starts_with(format!(
        "retry: refusing --state-dir '{}': it is writable by group or others (mode 0777)",
        dir.display()
    )));
    chmod(&dir, 0o700);
    let link = t.path("link");
    std::os::unix::fs::symlink(&dir, &link).unwrap();
    run(&link).assert().code(125).stderr(predicate::str::contains("it is a symbolic link"));
    if is_root() {
        chown_tree(&dir, NOBODY);
        run(&dir)
            .assert()
            .code(125)
            .stderr(predicate::str::contains("owned by uid 65534, not by you (uid 0)"));
        chown_tree(&dir, 0);
    }
    assert_eq!(t.runs("runs"), 0, "nothing ran");
    run(&dir).assert().success();
    // A missing one is made, 0700.
    run(&t.path("new/deep")).assert().success();
    assert_eq!(std::fs::metadata(t.path("new/deep")).unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(t.runs("runs"), 2);
}

// ---------------------------------------------------------------------
// 4. The file store never follows a planted symlink.

#[test]
fn the_file_store_never_writes_through_a_planted_symlink() {
    let t = T::new();
    let store = format!("file:{}", path_str(&t.path("st")));
    let run = || {
        let mut cmd = t.retry();
        cmd.args(["--state-store", &store, "--key", "k", "--rate", "5/1s", "true"]);
        cmd
    };
    run().assert().success();
    let victim = t.path("victim.txt");
    std::fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink("../victim.txt", t.path("st/k.state.tmp")).unwrap();
    run().assert().success();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(!std::fs::symlink_metadata(t.path("st/k.state.tmp")).is_ok_and(|m| m.file_type().is_symlink()));
    // The state file itself as a symlink is refused, the target untouched.
    std::fs::remove_file(t.path("st/k.state")).unwrap();
    std::os::unix::fs::symlink("../victim.txt", t.path("st/k.state")).unwrap();
    run().assert().code(125).stderr(predicate::str::contains(
        "'k.state' is not a regular file but a symbolic link: refusing to use it",
    ));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    // So is a store directory that is a symlink.
    std::os::unix::fs::symlink(t.path("st"), t.path("stlink")).unwrap();
    t.retry()
        .args([
            "--state-store",
            &format!("file:{}", path_str(&t.path("stlink"))),
            "--key",
            "k",
            "--rate",
            "5/1s",
        ])
        .arg("true")
        .assert()
        .code(125)
        .stderr(predicate::str::contains("is a symbolic link: refusing to use it"));
}

// ---------------------------------------------------------------------
// 5. and 9. --summary into FIFOs and devices, and into a directory retry
// cannot write.

#[test]
fn summary_into_a_fifo_a_device_or_a_descriptor_is_written_in_place() {
    let t = T::new();
    // A FIFO with a reader gets the document.
    let fifo = t.path("fifo");
    mkfifo(&fifo);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    t.retry().args(["--summary", path_str(&fifo), "true"]).assert().success();
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo(), "the FIFO was replaced");
    // Should retry not have opened it, the reader sees an empty document.
    drop(std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(&fifo));
    let text = reader.join().unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(doc["outcome"], "success");
    // Nobody reads it: said, not waited for; the status is the run's.
    t.retry()
        .timeout(Duration::from_secs(20))
        .args(["--summary", path_str(&fifo), "true"])
        .assert()
        .code(0)
        .stderr(predicate::str::contains(format!(
            "retry: cannot write --summary '{}': nobody is reading it",
            fifo.display()
        )));
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
    // Character devices stay devices, also for root.
    let (null, full) = (t.path("null"), t.path("full"));
    let (null, full) = if mknod_char(&null, 3) && mknod_char(&full, 7) {
        (null, full)
    } else {
        ("/dev/null".into(), "/dev/full".into())
    };
    t.retry().args(["--summary", path_str(&null), "true"]).assert().success().stderr("");
    t.retry().args(["--summary", path_str(&full), "true"]).assert().code(0).stderr(predicate::str::contains(
        format!("retry: cannot write --summary '{}': No space left on device", full.display()),
    ));
    for dev in [&null, &full] {
        assert!(std::fs::metadata(dev).unwrap().file_type().is_char_device(), "{dev:?} was replaced");
    }
    // A descriptor: the document goes there.
    let out = t.retry().args(["--summary", "/dev/stdout", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["outcome"], "success");
    // A service's stdout is often a socket, which cannot be opened: it is
    // written through retry's own descriptor.
    let (mut mine, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut cmd = StdCommand::new(bin());
    t.env(&mut cmd);
    let status = cmd
        .args(["--summary", "/dev/stdout", "true"])
        .stdin(std::process::Stdio::null())
        .stdout(std::os::fd::OwnedFd::from(theirs))
        .status()
        .unwrap();
    drop(cmd); // It holds the other end of the socket.
    assert!(status.success());
    let mut text = String::new();
    std::io::Read::read_to_string(&mut mine, &mut text).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&text).unwrap()["outcome"], "success");
    // A socket cannot be a report: 125 before anything runs.
    socket(&t.path("sock"));
    t.retry()
        .args(["--summary", path_str(&t.path("sock")), "--"])
        .args(sh("echo ran >> \"$HOME/runs\""))
        .assert()
        .code(125)
        .stderr(predicate::str::contains("is a socket; expected a file, a FIFO or a character device"));
    assert_eq!(t.runs("runs"), 0);
}

#[test]
fn summary_into_an_unwritable_directory_is_125_before_attempt_1_naming_the_path() {
    let t = T::new();
    let dir = t.path("ro");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o555);
    let file = dir.join("s.json");
    let mut cmd = if is_root() { retry_as_nobody(&t) } else { t.retry() };
    cmd.args(["--summary", path_str(&file), "--"])
        .args(sh("echo the-command-ran >&2"))
        .assert()
        .code(125)
        .stderr(predicate::str::starts_with(format!(
            "retry: invalid value '{}' for '--summary': directory '{}' is not writable: Permission denied",
            file.display(),
            dir.display()
        )))
        .stderr(predicate::str::contains("the-command-ran").not());
    // A directory that goes away during the run: said at the end, naming it
    // (not a temp file), and the run's status stands.
    let gone = t.path("gone");
    std::fs::create_dir(&gone).unwrap();
    let file = gone.join("s.json");
    t.retry()
        .args(["--summary", path_str(&file), "--"])
        .args(sh(&format!("rm -r {}", path_str(&gone))))
        .assert()
        .code(0)
        .stderr(format!(
            "retry: cannot write --summary '{}': cannot create a temporary file in '{}': No such file or directory\n",
            file.display(),
            gone.display()
        ));
}

// ---------------------------------------------------------------------
// 6. FIFOs, sockets, directories and devices never block drains, --list
// or the store.

#[test]
fn fifos_sockets_directories_and_devices_in_a_queue_never_block_a_drain_or_list() {
    let t = T::new();
    let q = t.path("q");
    // With --temp-state, so that the queue has a state/ to plant junk in.
    let real = enqueue(&t, &q, &["-n", "0", "--wait", "0", "--temp-state"], "[ \"$RETRY_ATTEMPT\" -ge 2 ]");
    let mut planted: Vec<(String, &str)> = Vec::new();
    let mut plant = |n: u32, kind: &'static str, make: &dyn Fn(&Path)| {
        let id = format!("20200101T000000.00000{n}Z-0000000{n}");
        make(&q.join(format!("{id}.job")));
        planted.push((id, kind));
    };
    plant(1, "a FIFO", &|p| mkfifo(p));
    plant(2, "a socket", &|p| socket(p));
    plant(3, "a directory", &|p| std::fs::create_dir(p).unwrap());
    plant(4, "a symbolic link", &|p| std::os::unix::fs::symlink("/dev/zero", p).unwrap());
    if is_root() {
        plant(5, "a character device", &|p| assert!(mknod_char(p, 5), "mknod"));
    }
    // Junk in state/ and a FIFO as a dead letter.
    mkfifo(&q.join("state/junk"));
    std::fs::create_dir_all(q.join("dead")).unwrap();
    chmod(&q.join("dead"), 0o700);
    let fifo_letter = "20200101T000000.000009Z-00000009";
    mkfifo(&q.join(format!("dead/{fifo_letter}.job")));
    let items = list(&t, &q);
    for (id, kind) in &planted {
        let found = listed(&items, id);
        assert_eq!(found.len(), 1, "{id}: {items:?}");
        assert_eq!(found[0]["state"], "queued");
        assert!(
            found[0]["reason"].as_str().unwrap().contains(&format!("not a regular file but {kind}")),
            "{items:?}"
        );
    }
    assert_eq!(listed(&items, fifo_letter)[0]["state"], "dead");
    let mut assert =
        t.retry().timeout(Duration::from_secs(20)).args(["--drain", path_str(&q)]).assert().code(1);
    for (id, kind) in &planted {
        assert = assert.stderr(predicate::str::contains(format!(
            "job {id}: moved to dead/: corrupt job file (kept as dead/{id}.corrupt): it is not a regular file but {kind}"
        )));
    }
    assert.stderr(predicate::str::contains(format!("job {real}: succeeded on attempt 2")));
    assert_eq!(ids_in(&q), Vec::<String>::new(), "every planted entry left the queue");
    let items = list(&t, &q);
    for (id, _) in &planted {
        assert_eq!(listed(&items, id)[0]["state"], "dead");
        assert!(std::fs::symlink_metadata(q.join(format!("dead/{id}.corrupt"))).is_ok(), "{id} kept");
    }
    // Nothing more to do: the next drain is quiet.
    t.retry().timeout(Duration::from_secs(20)).args(["--drain", path_str(&q)]).assert().code(0).stderr("");
}

#[test]
fn fifos_sockets_and_directories_in_the_file_store_are_refused_not_waited_on() {
    let t = T::new();
    let dir = t.path("st");
    let store = format!("file:{}", path_str(&dir));
    t.retry().args(["--state-store", &store, "--key", "ok", "--rate", "1/1s", "true"]).assert().success();
    mkfifo(&dir.join("c.state"));
    mkfifo(&dir.join("d.lock"));
    std::fs::create_dir(dir.join("e.state")).unwrap();
    socket(&dir.join("f.state"));
    for (key, file, kind) in [
        ("c", "c.state", "a FIFO"),
        ("d", "d.lock", "a FIFO"),
        ("e", "e.state", "a directory"),
        ("f", "f.state", "a socket"),
    ] {
        t.retry()
            .timeout(Duration::from_secs(20))
            .args(["--state-store", &store, "--key", key, "--rate", "1/1s", "--store-optional", "--"])
            .args(sh("echo ran >> \"$HOME/runs\""))
            .assert()
            .code(125)
            .stderr(predicate::str::contains(format!("'{file}' is not a regular file but {kind}: refusing")));
    }
    assert_eq!(t.runs("runs"), 0);
}

// ---------------------------------------------------------------------
// 7. and 10. Dead letters tell the truth; a killed drain's temp files.

fn strace() -> &'static str {
    assert!(
        StdCommand::new("strace").arg("-V").output().is_ok_and(|o| o.status.success()),
        "strace is not installed: apt-get install strace (the crash tests kill drains with it)"
    );
    "strace"
}

/// A job that fails with 1 on its first attempt and 3 (a permanent
/// failure) after it, and succeeds (writing its name to `succeeded`)
/// once the file `second` exists: buried by a first drain, it would
/// succeed if a second drain ran it.
const DOOMED: &str = "if [ -e \"$HOME/second\" ]; then echo \"$0\" >> \"$HOME/succeeded\"; exit 0; fi; \
                      [ \"$RETRY_ATTEMPT\" -ge 2 ] && exit 3; exit 1";

#[test]
fn a_job_both_queued_and_dead_is_dead_and_never_runs_again() {
    let t = T::new();
    let q = t.path("q");
    let id = enqueue(&t, &q, &["--stop-on-exit", "3", "-n", "0", "--wait", "0"], DOOMED);
    let queued = std::fs::read(q.join(format!("{id}.job"))).unwrap();
    t.retry().args(["--drain", path_str(&q)]).assert().code(1);
    // What a drain killed between the dead letter and the removal left.
    std::fs::write(q.join(format!("{id}.job")), &queued).unwrap();
    let items = list(&t, &q);
    assert_eq!(items.len(), 1, "listed once: {items:?}");
    assert_eq!(items[0]["state"], "dead");
    assert!(items[0]["reason"].as_str().unwrap().starts_with("permanent failure on attempt 2"));
    std::fs::write(t.path("second"), "").unwrap();
    t.retry().args(["--drain", path_str(&q)]).assert().code(0);
    assert_eq!(t.runs("succeeded"), 0, "a dead job ran again");
    assert!(!q.join(format!("{id}.job")).exists(), "the queued copy is removed");
    assert_eq!(ids_in(&q.join("dead")), [id]);
}

#[test]
fn temp_files_of_a_killed_drain_are_removed_by_the_next_drain_never_by_list() {
    let strace = strace();
    let t = T::new();
    let q = t.path("q");
    enqueue(&t, &q, &["-n", "0", "--wait", "0"], "exit 1");
    // Killed at the fsync of the rescheduled job's temp file.
    let status = StdCommand::new(strace)
        .args(["-f", "-qq", "-o", "/dev/null", "-e", "inject=fsync:signal=KILL:when=1"])
        .arg(bin())
        .args(["--drain", path_str(&q)])
        .env("HOME", t.dir.path())
        .current_dir(t.dir.path())
        .output()
        .unwrap()
        .status;
    assert_ne!(status.code(), Some(75), "the drain was not killed");
    let left = named(&q, ".");
    assert_eq!(left.len(), 1, "one temp file left: {left:?}");
    list(&t, &q);
    assert_eq!(named(&q, "."), left, "--list writes nothing");
    t.retry().args(["--drain", path_str(&q)]).assert().code(75);
    assert_eq!(named(&q, "."), Vec::<String>::new(), "the next drain removed it");
}

/// Copies a queue directory (files, dirs 0700; FIFOs made anew).
fn copy_queue(from: &Path, to: &Path) {
    std::fs::create_dir(to).unwrap();
    chmod(to, 0o700);
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_queue(&src, &dst);
        } else if kind.is_fifo() {
            mkfifo(&dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// The states of one queue after a drain was killed, and after the next
/// drain: each job exactly once (queued, or dead with a reason), the
/// rescheduled job never dead, a job that succeeded never dead.
struct Jobs {
    /// Buried without running (past its --max-age).
    old: String,
    /// Dies by a permanent failure (with recorded stdin).
    doomed: String,
    /// Rescheduled.
    failing: String,
    /// Succeeds.
    fine: String,
    /// Unreadable: garbage, and a FIFO.
    garbage: String,
    fifo: String,
}

impl Jobs {
    fn check(&self, t: &T, q: &Path, after: &str) {
        let items = list(t, q);
        let succeeded = t.lines("succeeded");
        let state = |id: &str| -> Option<&str> {
            let found = listed(&items, id);
            assert!(found.len() <= 1, "{after}: {id} listed twice: {items:?}");
            let item = found.first()?;
            if item["state"] == "dead" {
                assert!(item["reason"].as_str().is_some_and(|r| !r.is_empty()), "{after}: no reason: {item}");
            }
            item["state"].as_str()
        };
        for id in [&self.old, &self.garbage, &self.fifo] {
            assert!(state(id).is_some(), "{after}: {id} is gone: {items:?}");
        }
        assert_eq!(state(&self.failing), Some("queued"), "{after}: {items:?}");
        match state(&self.fine) {
            Some("queued") => {}
            None => {
                assert!(succeeded.contains(&"fine".to_string()), "{after}: the fine job is gone: {items:?}")
            }
            other => panic!("{after}: the fine job is {other:?}"),
        }
        match state(&self.doomed) {
            Some("dead") => {
                assert!(!succeeded.contains(&"doomed".to_string()), "{after}: dead but succeeded")
            }
            Some(_) => {}
            None => assert!(
                succeeded.contains(&"doomed".to_string()),
                "{after}: the doomed job is gone: {items:?}"
            ),
        }
    }
}

#[test]
fn a_drain_killed_at_any_write_step_leaves_each_job_in_exactly_one_state() {
    let strace = strace();
    let t = T::new();
    let q0 = t.path("q0");
    let opts = ["-n", "0", "--wait", "0"];
    let old = enqueue(&t, &q0, &["-n", "0", "--wait", "0", "--max-age", "1ms"], "exit 1");
    let doomed = {
        let before = ids_in(&q0);
        t.retry()
            .args(["--queue", path_str(&q0), "--stdin", "replay", "--stop-on-exit", "3"])
            .args(opts)
            .args(["--", "sh", "-c", DOOMED, "doomed"])
            .write_stdin("recorded")
            .assert()
            .code(75);
        ids_in(&q0).into_iter().find(|id| !before.contains(id)).unwrap()
    };
    let failing = enqueue(&t, &q0, &opts, "exit 1");
    let fine = {
        let before = ids_in(&q0);
        t.retry()
            .args(["--queue", path_str(&q0)])
            .args(opts)
            .args([
                "--",
                "sh",
                "-c",
                "[ \"$RETRY_ATTEMPT\" -ge 2 ] && echo \"$0\" >> \"$HOME/succeeded\"",
                "fine",
            ])
            .assert()
            .code(75);
        ids_in(&q0).into_iter().find(|id| !before.contains(id)).unwrap()
    };
    let garbage = "20200101T000000.000001Z-00000001".to_string();
    std::fs::write(q0.join(format!("{garbage}.job")), "{\"version\": 1, \"id\": trunc").unwrap();
    let fifo = "20200101T000000.000002Z-00000002".to_string();
    mkfifo(&q0.join(format!("{fifo}.job")));
    let jobs = Jobs { old, doomed, failing, fine, garbage, fifo };
    let q = t.path("q");
    let mut kills = 0;
    // Every system call that changes a file or a directory (an open with
    // O_CREAT is followed by a write or a link before it matters).
    for syscall in ["write", "fsync", "linkat", "renameat", "renameat2", "rename", "unlinkat", "mkdirat"] {
        for n in 1.. {
            let _ = std::fs::remove_dir_all(&q);
            let _ = std::fs::remove_file(t.path("second"));
            let _ = std::fs::remove_file(t.path("succeeded"));
            copy_queue(&q0, &q);
            let mut cmd = StdCommand::new(strace);
            cmd.args(["-f", "-qq", "-o", "/dev/null", "-e"])
                .arg(format!("inject={syscall}:signal=KILL:when={n}"))
                .arg(bin())
                .args(["--drain", path_str(&q)]);
            t.env(&mut cmd);
            let status = cmd.output().unwrap().status;
            let killed = status.signal() == Some(libc::SIGKILL) || status.code() == Some(128 + libc::SIGKILL);
            let after = format!("killed at {syscall} #{n}");
            if killed {
                kills += 1;
                jobs.check(&t, &q, &after);
            }
            // The next drain: a dead job would now succeed, were it run.
            std::fs::write(t.path("second"), "").unwrap();
            t.retry().args(["--drain", path_str(&q)]).assert().code(predicate::in_iter([0, 1, 75]));
            let after = format!("the drain after one {after}");
            jobs.check(&t, &q, &after);
            let queued: Vec<String> = ids_in(&q);
            for id in ids_in(&q.join("dead")) {
                assert!(!queued.contains(&id), "{after}: {id} is queued and dead");
            }
            for dir in [q.clone(), q.join("dead")] {
                assert_eq!(named(&dir, ".part-"), Vec::<String>::new(), "{after}: temp files left");
            }
            if !killed {
                break;
            }
            assert!(n < 500, "{syscall}: the drain never completed");
        }
    }
    eprintln!("killed the drain at {kills} write steps");
    assert!(kills > 20, "only {kills} kills");
}
