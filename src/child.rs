//! Starting and ending one attempt's process.
//!
//! Spawning uses `clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD)`, the same
//! lean path glibc's `posix_spawn` takes, instead of std's fork+exec (which
//! std falls back to as soon as a `pre_exec` hook is needed): retry needs
//! `PR_SET_PDEATHSIG` and its own process group in the child, and the fork
//! path costs a copy of retry's page tables per attempt. The child runs on
//! its own small stack, shares retry's memory until it execs, and only
//! makes raw system calls on data the parent prepared (no allocation, no
//! locks), as a vfork child must.
//!
//! A [`Child`] owns a pidfd where the kernel gives one (Linux 5.4:
//! `CLONE_PIDFD` and `waitid(P_PIDFD)`): it can be polled for exit, and
//! waited on with `WNOWAIT` so the pid and process group stay reserved
//! until retry reaps the leader — signalling a group id is safe until then.
//! Where pidfds are missing (an older kernel ignores the flag and leaves
//! the fd at -1, or `clone`/`waitid` answer EINVAL, ENOSYS or EPERM under a
//! seccomp policy), this is noticed at the first spawn and every child is
//! then started without `CLONE_PIDFD` and waited for by pid: the caller
//! learns of its exit from SIGCHLD ([`crate::signals`]), and the same
//! `WNOWAIT` keeps its pid reserved. Nothing else differs.
//!
//! The guardian: a tiny process per retry, started with the first spawn of
//! a process group, that kills the running attempt's group when retry dies
//! — even by SIGKILL, which `PR_SET_PDEATHSIG` answers for the attempt's
//! leader only (SPEC Edge rules, "Attempts die with retry"). It shares
//! retry's memory and descriptor table (`CLONE_VM | CLONE_FILES`), so it
//! reads the running group from [`GROUP`] at no cost per attempt, and
//! retry's descriptors — a `--concurrency` slot's lock, a drained job's
//! lock, a Redis connection — stay open until the group it kills is gone:
//! no lock is handed to another process while a member still runs.

use std::ffi::{CStr, CString, c_int, c_void};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};

use crate::sys::{self, Exit, Wait};

/// Everything needed to start COMMAND, prepared once per run.
pub struct Program {
    /// Paths to try in order (PATH search done up front, `execvp`-style).
    candidates: Vec<CString>,
    /// argv as given; argv[0] is COMMAND as the user typed it.
    argv: Vec<CString>,
    /// The name as typed, for messages.
    pub name: String,
    /// The directory COMMAND runs in (a queued job's); `None`: retry's.
    pub cwd: Option<CString>,
}

impl Program {
    /// Resolves `argv[0]` against `path` (the PATH of retry's environment):
    /// a name with a `/` is used as is, otherwise each PATH entry is tried
    /// in order when spawning, as `execvp` does.
    pub fn new(argv: &[std::ffi::OsString], path: Option<&std::ffi::OsStr>) -> io::Result<Program> {
        use std::os::unix::ffi::OsStrExt as _;
        let nul = |e: std::ffi::NulError| io::Error::new(io::ErrorKind::InvalidInput, e);
        let argv: Vec<CString> =
            argv.iter().map(|a| CString::new(a.as_bytes()).map_err(nul)).collect::<Result<_, _>>()?;
        let Some(first) = argv.first() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no command"));
        };
        let name_bytes = first.as_bytes();
        let name = String::from_utf8_lossy(name_bytes).into_owned();
        let candidates = if name_bytes.is_empty() {
            Vec::new()
        } else if name_bytes.contains(&b'/') {
            vec![first.clone()]
        } else {
            let path = path.map_or(&b"/bin:/usr/bin"[..], |p| p.as_bytes());
            path.split(|b| *b == b':')
                .map(|dir| {
                    let mut full = Vec::with_capacity(dir.len() + 1 + name_bytes.len());
                    // An empty PATH entry means the current directory.
                    full.extend_from_slice(if dir.is_empty() { b"." } else { dir });
                    full.push(b'/');
                    full.extend_from_slice(name_bytes);
                    CString::new(full).map_err(nul)
                })
                .collect::<Result<_, _>>()?
        };
        Ok(Program { candidates, argv, name, cwd: None })
    }
}

impl Program {
    /// The first candidate path that is a regular file: where a failed
    /// exec found something (to explain a missing `#!` interpreter).
    pub fn found(&self) -> Option<std::path::PathBuf> {
        use std::os::unix::ffi::OsStrExt as _;
        self.candidates
            .iter()
            .map(|c| std::path::PathBuf::from(std::ffi::OsStr::from_bytes(c.as_bytes())))
            .find(|p| p.is_file())
    }
}

/// Where a standard descriptor of the child comes from.
#[derive(Clone, Copy, Debug)]
pub enum Stdio {
    /// The same descriptor as retry's.
    Inherit,
    /// This descriptor of retry's, duplicated onto it.
    Fd(RawFd),
}

/// One spawn: the program, its environment and descriptors.
pub struct Spawn<'a> {
    pub program: &'a Program,
    /// `NAME=value` entries.
    pub env: &'a [CString],
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
    /// Lead a new process group (false for `--foreground`).
    pub own_group: bool,
    /// Change to this directory before exec (a queued job's saved working
    /// directory); `None`: retry's own.
    pub cwd: Option<&'a CStr>,
}

/// Why COMMAND could not be started.
#[derive(Debug)]
pub enum SpawnError {
    /// ENOENT: not found (127).
    NotFound(io::Error),
    /// Found but not executable (126): EACCES, ENOEXEC, ELOOP, E2BIG, ...
    CannotExecute(io::Error),
    /// retry's own failure before exec (clone failed, ...).
    Internal(io::Error),
}

/// Signals whose disposition the child resets to the default before it
/// unblocks signals: the ones retry catches (their handlers would run in
/// the child between clone and exec) and SIGPIPE (ignored by Rust's
/// runtime; an ignored signal stays ignored across exec).
const RESET_SIGNALS: [c_int; 6] =
    [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGCHLD, libc::SIGPIPE];

/// Are pidfds usable here? Learnt at the first spawn, then kept.
static PIDFDS: AtomicU8 = AtomicU8::new(PIDFDS_UNKNOWN);
const PIDFDS_UNKNOWN: u8 = 0;
const PIDFDS_YES: u8 = 1;
const PIDFDS_NO: u8 = 2;

/// The process group of the running child that leads one (0: none). The
/// child stores it itself, before it execs, so that no grandchild can
/// exist before the guardian knows the group; retry clears it before it
/// reaps the leader, so it never names a group id that may be reused.
static GROUP: AtomicI32 = AtomicI32::new(0);

/// The running child's pid until it is reaped (0: none): the one exited
/// child that reaping orphans must leave to its [`Child`].
static LEADER: AtomicI32 = AtomicI32::new(0);

/// The guardian's pid (0: not started, -1: could not be started).
static GUARDIAN: AtomicI32 = AtomicI32::new(0);

/// retry's pid, as the guardian compares it with its parent.
static GUARDED: AtomicI32 = AtomicI32::new(0);

/// The signal that tells the guardian its parent died (blocked in it, and
/// waited for). A stray one is harmless: it checks its parent again.
const GUARD_SIGNAL: c_int = libc::SIGUSR1;

/// Reaps orphans re-parented to retry that have exited, leaving the
/// running child (its exit is its [`Child`]'s to collect).
pub fn reap_orphans() {
    sys::reap_orphans(&[LEADER.load(Ordering::SeqCst)]);
}

/// Uses pidfds, or the pid path ([`PIDFDS`])?
pub fn uses_pidfds() -> bool {
    PIDFDS.load(Ordering::Relaxed) != PIDFDS_NO
}

/// Size of the stack the child runs on until it execs.
const CHILD_STACK: usize = 64 * 1024;

/// What the child reads (prepared by the parent) and writes (errno on
/// failure). Shared memory: the parent is suspended until exec or exit.
#[repr(C)]
struct ChildArgs {
    candidates: *const *const libc::c_char,
    n_candidates: usize,
    argv: *const *const libc::c_char,
    /// `["/bin/sh", <candidate>, argv[1..], NULL]` for ENOEXEC.
    sh_argv: *mut *const libc::c_char,
    envp: *const *const libc::c_char,
    fds: [c_int; 3],
    own_group: bool,
    /// Directory to change to before exec, or null.
    cwd: *const libc::c_char,
    parent: libc::pid_t,
    errno: c_int,
    /// The failure happened before exec (setpgid, dup2): retry's own.
    setup_failed: bool,
    /// `chdir(cwd)` failed: the command cannot run there (126).
    chdir_failed: bool,
    searched: bool,
}

/// The child side: only async-signal-safe libc calls on prepared data.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: arg points to the ChildArgs the parent keeps alive (and does
    // not touch) until this child execs or exits: CLONE_VFORK suspends it.
    let args = unsafe { &mut *arg.cast::<ChildArgs>() };
    // SAFETY: each call below is async-signal-safe and takes either plain
    // integers or pointers into the prepared, NUL-terminated arrays.
    unsafe {
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        for sig in RESET_SIGNALS {
            libc::sigaction(sig, &dfl, ptr::null_mut());
        }
        // Die with retry even if it is SIGKILLed (the parent thread is
        // retry's main thread, which lives as long as the run).
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if libc::getppid() != args.parent {
            // retry died before the death signal was armed.
            libc::_exit(127);
        }
        if args.own_group {
            if libc::setpgid(0, 0) != 0 {
                return fail(args);
            }
            // Before exec: the guardian knows the group before any
            // grandchild can exist (this memory is retry's: CLONE_VM).
            GROUP.store(libc::getpid(), Ordering::SeqCst);
        }
        for (target, &source) in args.fds.iter().enumerate() {
            if source >= 0 && libc::dup2(source, target as c_int) < 0 {
                return fail(args);
            }
        }
        // chdir is async-signal-safe; cwd is a prepared C string. A
        // relative COMMAND or PATH entry is then found from there.
        if !args.cwd.is_null() && libc::chdir(args.cwd) != 0 {
            args.errno = *libc::__errno_location();
            args.chdir_failed = true;
            libc::_exit(127);
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, ptr::null_mut());

        // execvp's search: skip ENOENT-like errors, remember EACCES, stop
        // at any other error; run a file without #! with /bin/sh.
        let mut eacces = false;
        let mut last = libc::ENOENT;
        for i in 0..args.n_candidates {
            let path = *args.candidates.add(i);
            libc::execve(path, args.argv, args.envp);
            last = *libc::__errno_location();
            match last {
                libc::ENOEXEC => {
                    *args.sh_argv.add(1) = path;
                    libc::execve(*args.sh_argv, args.sh_argv, args.envp);
                    last = *libc::__errno_location();
                    break;
                }
                libc::EACCES => eacces = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT
                    if args.searched => {}
                _ => break,
            }
        }
        args.errno = if eacces && args.searched { libc::EACCES } else { last };
        libc::_exit(127)
    }
}

/// Records errno for the parent and exits.
unsafe fn fail(args: &mut ChildArgs) -> c_int {
    // SAFETY: reading errno and exiting are async-signal-safe.
    unsafe {
        args.errno = *libc::__errno_location();
        args.setup_failed = true;
        libc::_exit(127)
    }
}

/// A running (or exited, not yet reaped) attempt.
pub struct Child {
    pid: libc::pid_t,
    /// `None` on the pid path (no pidfds here).
    pidfd: Option<OwnedFd>,
    own_group: bool,
    reaped: bool,
}

/// Starts a process. The returned error says whether COMMAND was not
/// found (127), not executable (126), or retry itself failed.
pub fn spawn(req: &Spawn<'_>) -> Result<Child, SpawnError> {
    let prog = req.program;
    let ptrs = |v: &[CString]| -> Vec<*const libc::c_char> {
        v.iter().map(|c| c.as_ptr()).chain(std::iter::once(ptr::null())).collect()
    };
    let candidates: Vec<*const libc::c_char> = prog.candidates.iter().map(|c| c.as_ptr()).collect();
    let argv = ptrs(&prog.argv);
    let envp = ptrs(req.env);
    let sh = c"/bin/sh";
    let mut sh_argv: Vec<*const libc::c_char> = Vec::with_capacity(prog.argv.len() + 2);
    sh_argv.push(sh.as_ptr());
    sh_argv.push(ptr::null());
    sh_argv.extend(prog.argv.iter().skip(1).map(|c| c.as_ptr()));
    sh_argv.push(ptr::null());
    let fd = |s: Stdio| match s {
        Stdio::Inherit => -1,
        Stdio::Fd(fd) => fd,
    };
    let searched =
        prog.candidates.len() > 1 || prog.argv.first().is_some_and(|a| !a.as_bytes().contains(&b'/'));
    let mut args = ChildArgs {
        candidates: candidates.as_ptr(),
        n_candidates: candidates.len(),
        argv: argv.as_ptr(),
        sh_argv: sh_argv.as_mut_ptr(),
        envp: envp.as_ptr(),
        fds: [fd(req.stdin), fd(req.stdout), fd(req.stderr)],
        own_group: req.own_group,
        cwd: req.cwd.map_or(ptr::null(), CStr::as_ptr),
        parent: my_pid(),
        errno: 0,
        setup_failed: false,
        chdir_failed: false,
        searched,
    };
    if candidates.is_empty() {
        return Err(SpawnError::NotFound(io::Error::from_raw_os_error(libc::ENOENT)));
    }
    // Not zeroed: a stack is written before it is read, and zeroing 64 KiB
    // cost 16 page faults and ~65,000 instructions per spawn.
    let mut stack: Vec<u8> = Vec::with_capacity(CHILD_STACK);
    // The stack grows down: pass its 16-byte aligned top.
    // SAFETY: the offset is the end of the allocation (capacity CHILD_STACK).
    let top = unsafe { stack.as_mut_ptr().add(CHILD_STACK) };
    let top = ((top as usize) & !15) as *mut c_void;
    let mut pidfd: c_int = -1;
    let want_pidfd = uses_pidfds();
    // Block every signal across clone so that no handler of retry's runs in
    // the child before it has reset them (glibc's posix_spawn does the same).
    // SAFETY: sigset operations on local, initialised sets.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    if req.own_group {
        // Under the same mask: the guardian starts with every signal blocked.
        start_guardian();
    }
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD;
    let args_ptr: *mut c_void = (&mut args as *mut ChildArgs).cast();
    // SAFETY: child_main only reads `args` and the arrays it points to (all
    // alive until this call returns, since CLONE_VFORK suspends us until the
    // child execs or exits) and runs on `stack`, which outlives the call.
    let clone =
        |flags: c_int, pidfd: *mut c_int| unsafe { libc::clone(child_main, top, flags, args_ptr, pidfd) };
    let mut pid =
        if want_pidfd { clone(flags | libc::CLONE_PIDFD, &mut pidfd) } else { clone(flags, ptr::null_mut()) };
    let mut clone_err = io::Error::last_os_error();
    if pid == -1 && want_pidfd && sys::refused(&clone_err) {
        // A seccomp policy (or a kernel) that refuses CLONE_PIDFD: the child
        // never ran, so `args` is untouched. The pid path from now on.
        PIDFDS.store(PIDFDS_NO, Ordering::Relaxed);
        pidfd = -1;
        pid = clone(flags, ptr::null_mut());
        clone_err = io::Error::last_os_error();
    }
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, ptr::null_mut()) };
    drop(stack);
    if pid == -1 {
        return Err(SpawnError::Internal(clone_err));
    }
    LEADER.store(pid, Ordering::SeqCst);
    // A kernel before 5.2 ignores the unknown flag and leaves the fd as it
    // was (-1): no pidfds here.
    let pidfd = if pidfd >= 0 {
        // SAFETY: with CLONE_PIDFD the kernel stored a new fd we now own.
        Some(unsafe { OwnedFd::from_raw_fd(pidfd) })
    } else {
        if want_pidfd {
            PIDFDS.store(PIDFDS_NO, Ordering::Relaxed);
        }
        None
    };
    let mut child = Child { pid, pidfd, own_group: req.own_group, reaped: false };
    if child.pidfd.is_some() && PIDFDS.load(Ordering::Relaxed) == PIDFDS_UNKNOWN {
        // Linux 5.2 and 5.3 give a pidfd from clone but know no P_PIDFD: ask
        // once (a peek that changes nothing), and fall back if refused.
        let _ = child.peek();
        if child.pidfd.is_some() {
            PIDFDS.store(PIDFDS_YES, Ordering::Relaxed);
        }
    }
    if args.errno != 0 {
        // The child failed before or at exec and has exited: reap it.
        let _ = child.reap();
        let err = io::Error::from_raw_os_error(args.errno);
        if args.chdir_failed {
            // The command cannot run where it must: like an exec failure.
            let dir = req.cwd.map(|c| c.to_string_lossy().into_owned()).unwrap_or_default();
            let text = crate::parse::os_error(&err);
            return Err(SpawnError::CannotExecute(io::Error::new(
                err.kind(),
                format!("cannot change to directory '{dir}': {text}"),
            )));
        }
        return Err(if args.setup_failed {
            SpawnError::Internal(err)
        } else {
            match args.errno {
                libc::ENOENT => SpawnError::NotFound(err),
                // A PATH search that only met missing entries found nothing.
                libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT if searched => {
                    SpawnError::NotFound(err)
                }
                _ => SpawnError::CannotExecute(err),
            }
        });
    }
    // Register it for a lease renewer that may have to end it (`running`).
    crate::running::started(child.pid, child.own_group);
    Ok(child)
}

impl Child {
    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// Leads its own process group (not `--foreground`).
    pub fn own_group(&self) -> bool {
        self.own_group
    }

    /// Readable (POLLIN) once the process has exited; `None` on the pid
    /// path, where SIGCHLD says when to [`Child::peek`].
    pub fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(|fd| fd.as_fd())
    }

    /// Sends `sig` to the attempt: its whole process group, or only the
    /// child with `--foreground` (never retry's own group). No-op once
    /// reaped, so a recycled pid is never signalled.
    pub fn signal(&self, sig: c_int) {
        if self.reaped {
            return;
        }
        if self.own_group {
            sys::kill(-self.pid, sig);
        } else {
            sys::kill(self.pid, sig);
        }
    }

    /// SIGKILLs the rest of the group of an exited, unreaped leader.
    pub fn kill_group(&self) {
        if self.own_group && !self.reaped {
            sys::kill(-self.pid, libc::SIGKILL);
        }
    }

    /// After the group was SIGKILLed and the leader reaped: waits (up to
    /// `limit`) until every member is gone and reaped.
    pub fn settle_group(&self, limit: std::time::Duration) {
        if self.own_group && self.reaped {
            sys::reap_group(self.pid, limit);
        }
    }

    /// Waits by pidfd, or by pid on the pid path. A pidfd that `waitid`
    /// refuses (no `P_PIDFD` in this kernel, or a seccomp policy) is
    /// dropped, and the pid path used from then on.
    fn wait(&mut self, reap: bool, block: bool) -> io::Result<Option<Exit>> {
        if let Some(fd) = &self.pidfd {
            match sys::waitid(Wait::Pidfd(fd.as_fd()), reap, block) {
                Err(e) if sys::refused(&e) => {
                    PIDFDS.store(PIDFDS_NO, Ordering::Relaxed);
                    self.pidfd = None;
                }
                other => return other,
            }
        }
        sys::waitid(Wait::Pid(self.pid), reap, block)
    }

    /// How the process exited, if it has, leaving it unreaped.
    pub fn peek(&mut self) -> io::Result<Option<Exit>> {
        self.wait(false, false)
    }

    /// Reaps the exited process (blocks until it has exited).
    pub fn reap(&mut self) -> io::Result<Exit> {
        crate::running::ended(self.pid);
        self.forget();
        let exit = self.wait(true, true)?;
        self.reaped = true;
        LEADER.store(0, Ordering::SeqCst);
        exit.ok_or_else(|| io::Error::other("waitid reported no exit"))
    }

    /// The guardian stops covering the group before the leader is reaped:
    /// after that, its id may name someone else's group.
    fn forget(&self) {
        if self.own_group {
            let _ = GROUP.compare_exchange(self.pid, 0, Ordering::SeqCst, Ordering::SeqCst);
        }
    }
}

impl Drop for Child {
    /// An attempt abandoned on an error path is killed and reaped: no
    /// orphans, no zombies.
    fn drop(&mut self) {
        if !self.reaped {
            self.signal(libc::SIGKILL);
            let _ = self.reap();
        }
    }
}

/// Starts the guardian once per process (see the module's doc): a process
/// that shares retry's memory and descriptors, in its own process group (a
/// `kill -9` of retry's job or group leaves it to do its work), blocked in
/// `sigtimedwait` until retry dies. A failure to start it is not fatal:
/// the attempt's leader still dies with retry (`PR_SET_PDEATHSIG`). The
/// caller blocks every signal around this call: the guardian starts with
/// every signal blocked and keeps them so.
fn start_guardian() {
    if GUARDIAN.load(Ordering::Relaxed) != 0 {
        return;
    }
    GUARDED.store(my_pid(), Ordering::SeqCst);
    // The guardian runs on a stack in retry's .bss (no mmap; pages are
    // touched only as used), which only it ever uses, for retry's life.
    let top = GUARD_STACK_MEM.0.get().cast::<u8>().wrapping_add(GUARD_STACK).cast::<c_void>();
    // No exit signal (a "clone child"): retry's waits for any child, which
    // reap orphans and read stop reports, never see it; only
    // `end_guardian` waits for it (__WCLONE), so its pid is never reused
    // while retry may still signal it.
    let flags = libc::CLONE_VM | libc::CLONE_FILES;
    // SAFETY: guardian_main runs on its own stack (`top` is the end of
    // GUARD_STACK_MEM, 16-byte aligned, used by nothing else) and touches
    // only atomics and async-signal-safe calls; the argument is unused.
    let pid = unsafe { libc::clone(guardian_main, top, flags, ptr::null_mut()) };
    if pid <= 0 {
        GUARDIAN.store(-1, Ordering::Relaxed);
        return;
    }
    GUARDIAN.store(pid, Ordering::SeqCst);
    sys::at_exit(end_guardian);
}

/// The guardian's stack: it needs ~6 KiB (a directory buffer and a stat
/// line), pages are touched only as used.
const GUARD_STACK: usize = 64 * 1024;

/// Memory for the guardian's stack, aligned as a stack top must be.
#[repr(C, align(16))]
struct GuardStack(std::cell::UnsafeCell<[u8; GUARD_STACK]>);

// SAFETY: only the guardian touches the bytes (through the pointer handed
// to clone); retry's own threads never read or write them.
unsafe impl Sync for GuardStack {}

static GUARD_STACK_MEM: GuardStack = GuardStack(std::cell::UnsafeCell::new([0; GUARD_STACK]));

/// retry's pid, asked once (retry never forks: its children exec at once).
fn my_pid() -> libc::pid_t {
    static PID: AtomicI32 = AtomicI32::new(0);
    match PID.load(Ordering::Relaxed) {
        0 => {
            // SAFETY: getpid has no preconditions.
            let pid = unsafe { libc::getpid() };
            PID.store(pid, Ordering::Relaxed);
            pid
        }
        pid => pid,
    }
}

/// The guardian's body. Until retry dies it makes only calls that cannot
/// fail (so it never writes `errno`, which lives in retry's memory).
extern "C" fn guardian_main(_: *mut c_void) -> c_int {
    // SAFETY: prctl, setpgid, getppid and sigtimedwait take integers and
    // pointers to locals; the kill and wait that follow allocate nothing.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, c"retry-guard".as_ptr(), 0, 0, 0);
        libc::setpgid(0, 0);
        libc::prctl(libc::PR_SET_PDEATHSIG, GUARD_SIGNAL, 0, 0, 0);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, GUARD_SIGNAL);
        // Also when retry died before the death signal was armed.
        while libc::getppid() == GUARDED.load(Ordering::SeqCst) {
            // The raw call: glibc's wrapper is a cancellation point, which
            // touches the calling thread's state — retry's main thread's.
            libc::syscall(
                libc::SYS_rt_sigtimedwait,
                &set as *const libc::sigset_t,
                ptr::null_mut::<libc::siginfo_t>(),
                ptr::null::<libc::timespec>(),
                std::mem::size_of::<libc::c_ulong>(),
            );
        }
        sys::kill_group_and_wait(GROUP.load(Ordering::SeqCst));
        libc::_exit(0)
    }
}

/// Ends the guardian as retry ends normally (the attempt is over, so there
/// is nothing to kill), and waits until it is gone, so nothing of retry
/// outlives it.
fn end_guardian() {
    let pid = GUARDIAN.swap(-1, Ordering::SeqCst);
    if pid <= 0 {
        return;
    }
    sys::kill(pid, libc::SIGKILL);
    loop {
        // SAFETY: waits for our own (clone) child; a null status is allowed.
        let ret = unsafe { libc::waitpid(pid, ptr::null_mut(), libc::__WCLONE) };
        if ret != -1 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// Raw fd of an owned descriptor, for `Stdio::Fd`.
pub fn raw(fd: &OwnedFd) -> RawFd {
    fd.as_raw_fd()
}
