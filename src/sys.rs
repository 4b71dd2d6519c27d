//! Thin, policy-free wrappers over the Linux system calls retry needs
//! beyond std: pipes, `ppoll`, `splice`, `tee`, `sendfile`,
//! `copy_file_range`, `memfd`, process-group signals, `waitid` on a pidfd
//! or a pid, stop reports, subreaping. Every `unsafe` block here is a plain
//! FFI call on values this module owns or borrows; the SAFETY notes say
//! what the kernel reads or writes.
//!
//! Kernel features and their fallbacks (README "Kernels"): `waitid` takes a
//! pidfd ([`Wait::Pidfd`], Linux 5.4) or a pid ([`Wait::Pid`], any kernel);
//! `memfd_create` (3.17) falls back to an unlinked file in TMPDIR.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::time::Duration;

/// The buffer size asked for the pipes retry reads (the default
/// `/proc/sys/fs/pipe-max-size`, so unprivileged users get it too).
pub const PIPE_SIZE: usize = 1 << 20;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 { Err(io::Error::last_os_error()) } else { Ok(ret) }
}

fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 { Err(io::Error::last_os_error()) } else { Ok(ret as usize) }
}

/// Makes the system call `call` until it is not interrupted (EINTR).
fn no_eintr(mut call: impl FnMut() -> libc::ssize_t) -> io::Result<usize> {
    loop {
        match cvt_size(call()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two fds into the array we pass.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A close-on-exec pipe whose both ends are non-blocking (one `pipe2`).
pub fn pipe_nonblocking() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two fds into the array we pass.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sets O_NONBLOCK on a descriptor retry owns (never on inherited stdio).
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl on a valid fd; F_GETFL/F_SETFL take and return ints.
    let flags = cvt(unsafe { libc::fcntl(raw, libc::F_GETFL) })?;
    cvt(unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    Ok(())
}

/// Asks for a pipe buffer of `bytes` (F_SETPIPE_SZ); returns the size the
/// kernel granted. Fails (EPERM) past `/proc/sys/fs/pipe-max-size` or the
/// user's pipe quota, which callers may ignore: the pipe keeps its size.
pub fn set_pipe_size(fd: impl AsRawFd, bytes: usize) -> io::Result<usize> {
    let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: fcntl on an integer fd with an integer argument.
    let granted = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, bytes) })?;
    Ok(usize::try_from(granted).unwrap_or(0))
}

/// The buffer size of a pipe (F_GETPIPE_SZ).
pub fn pipe_size(fd: RawFd) -> io::Result<usize> {
    // SAFETY: fcntl on an integer fd, no pointer argument.
    let size = cvt(unsafe { libc::fcntl(fd, libc::F_GETPIPE_SZ) })?;
    Ok(usize::try_from(size).unwrap_or(0))
}

/// The signal mask `ppoll` waits with, once [`set_poll_mask`] set it:
/// retry keeps SIGCHLD blocked everywhere else, so its handler runs only
/// while a `ppoll` waits (no EINTR in the middle of other system calls),
/// and a SIGCHLD that came meanwhile is delivered as the wait begins.
static POLL_MASK: OnceLock<libc::sigset_t> = OnceLock::new();

/// Blocks `sig` in the calling thread (threads it starts later inherit
/// that) and makes every later [`poll`] wait with the mask as it was
/// before, so `sig` is delivered only during a `ppoll`.
pub fn block_outside_poll(sig: libc::c_int) -> io::Result<()> {
    // SAFETY: sigset operations on local sets; pthread_sigmask reads `add`
    // and writes the previous mask into `old`.
    unsafe {
        let mut add: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut add);
        libc::sigaddset(&mut add, sig);
        match libc::pthread_sigmask(libc::SIG_BLOCK, &add, &mut old) {
            0 => {}
            e => return Err(io::Error::from_raw_os_error(e)),
        }
        libc::sigdelset(&mut old, sig);
        let _ = POLL_MASK.set(old);
    }
    Ok(())
}

/// `ppoll` with a timeout (`None` = wait forever). EINTR counts as a wake-up
/// with nothing ready: the caller re-checks its signal pipe and clocks.
pub fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ts = timeout.map(|t| libc::timespec {
        // At most 68 years, which fits `time_t` on every libc (and musl's
        // `time_t` alias is deprecated: it is named only through `as _`).
        tv_sec: t.as_secs().min(i32::MAX as u64) as _,
        tv_nsec: libc::c_long::from(t.subsec_nanos() as i32),
    });
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    let mask = POLL_MASK.get().map_or(std::ptr::null(), |m| m as *const libc::sigset_t);
    // SAFETY: fds is a valid slice of pollfd; ts_ptr and mask are null or
    // point to values that live until the call returns.
    let ret = unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ts_ptr, mask) };
    match cvt(ret) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

pub fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd { fd, events, revents: 0 }
}

/// `read(2)`, retrying on EINTR.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for writes of buf.len() bytes.
    no_eintr(|| unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) })
}

/// `write(2)`, retrying on EINTR.
pub fn write(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: buf is valid for reads of buf.len() bytes.
    no_eintr(|| unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) })
}

/// Writes all of `buf` to a blocking descriptor.
pub fn write_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match write(fd, buf)? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => buf = &buf[n..],
        }
    }
    Ok(())
}

/// `pread(2)`, retrying on EINTR.
pub fn pread(fd: RawFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let off = libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: buf is valid for writes of buf.len() bytes.
    no_eintr(|| unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), off) })
}

/// Copies `count` bytes of file `from` starting at `offset` to `to` (any
/// descriptor) inside the kernel; returns the bytes moved.
pub fn sendfile(to: RawFd, from: RawFd, offset: &mut u64, count: usize) -> io::Result<usize> {
    let mut off = libc::off_t::try_from(*offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: off is a valid off_t the kernel reads and advances.
    let n = no_eintr(|| unsafe { libc::sendfile(to, from, &mut off, count) })?;
    *offset = off as u64;
    Ok(n)
}

/// `splice(2)` from pipe `from` to `to` (a file, at its offset, or a pipe)
/// without blocking on `from`: moves up to `count` bytes inside the kernel;
/// `Ok(0)` at EOF (no writer left and nothing buffered); WouldBlock when
/// the pipe is empty.
pub fn splice_from_pipe(from: RawFd, to: RawFd, count: usize) -> io::Result<usize> {
    // SAFETY: integer fds, null offsets (the files' own offsets are used).
    no_eintr(|| unsafe {
        libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), count, libc::SPLICE_F_NONBLOCK)
    })
}

/// `tee(2)`: copies up to `count` bytes of pipe `from` into pipe `to`
/// without consuming them (pages are shared, not copied). Waits while `to`
/// is full (a blocking descriptor), never for `from` (WouldBlock when it
/// is empty); `Ok(0)` at `from`'s EOF. EINVAL when `to` is not a pipe.
pub fn tee(from: RawFd, to: RawFd, count: usize) -> io::Result<usize> {
    // SAFETY: integer fds and flags only.
    no_eintr(|| unsafe { libc::tee(from, to, count, 0) })
}

/// `copy_file_range(2)` from file `from` at `offset` to `to` at its own
/// offset: inside the kernel, and on file systems that can, by sharing
/// blocks instead of copying them. Returns the bytes copied.
pub fn copy_file_range(from: RawFd, offset: &mut u64, to: RawFd, count: usize) -> io::Result<usize> {
    let mut off =
        libc::loff_t::try_from(*offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `off` is a valid loff_t the kernel reads and advances; the
    // output offset is null (the file's own).
    let n =
        no_eintr(|| unsafe { libc::copy_file_range(from, &mut off, to, std::ptr::null_mut(), count, 0) })?;
    *offset = off as u64;
    Ok(n)
}

/// Is `fd` a regular file?
pub fn is_regular(fd: RawFd) -> bool {
    has_type(fd, libc::S_IFREG)
}

/// Is `fd` open on a file of type `ty` (`S_IFREG`, `S_IFIFO`, ...)?
fn has_type(fd: RawFd, ty: libc::mode_t) -> bool {
    // SAFETY: zeroed stat is a valid output buffer for fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on an integer fd; st is a valid out-pointer.
    unsafe { libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == ty }
}

/// An anonymous in-memory file (close-on-exec). Before Linux 3.17 (or
/// where a seccomp policy refuses `memfd_create`): an already-unlinked
/// file in TMPDIR instead, which is as private and leaves nothing behind.
pub fn memfd(name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: name is a valid C string; flags are constants.
    match cvt(unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) }) {
        // SAFETY: the fd was just created and is owned by nobody else.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
        Err(e) if refused(&e) => tempfile::tempfile().map(OwnedFd::from),
        Err(e) => Err(e),
    }
}

/// `kill(2)`. Negative `pid` signals a process group. ESRCH is not an error.
pub fn kill(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill takes plain integers. Callers only name pids/groups they
    // have not reaped yet, so the id cannot have been reused.
    unsafe { libc::kill(pid, sig) };
}

/// Does process group `pgid` still have members (zombies included)? Only
/// probes (signal 0), so it is harmless even if the id was reused.
pub fn group_exists(pgid: libc::pid_t) -> bool {
    // SAFETY: kill with signal 0 sends nothing; integers only.
    let ret = unsafe { libc::kill(-pgid, 0) };
    ret == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// What `waitid` reports about an exited child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// The child a [`waitid`] is about: by pidfd (Linux 5.4) or by pid.
#[derive(Clone, Copy, Debug)]
pub enum Wait<'a> {
    Pidfd(BorrowedFd<'a>),
    /// Only for a child of ours that is not reaped yet, so the pid cannot
    /// have been reused.
    Pid(libc::pid_t),
}

/// Waits for a child to exit. With `reap == false` the child stays a
/// zombie (WNOWAIT), so its pid and process group stay reserved. With
/// `block == false`, `Ok(None)` means still running. A kernel without
/// `P_PIDFD` answers [`Wait::Pidfd`] with EINVAL (a seccomp policy may say
/// EPERM or ENOSYS): see [`refused`].
pub fn waitid(child: Wait<'_>, reap: bool, block: bool) -> io::Result<Option<Exit>> {
    let mut flags = libc::WEXITED;
    if !reap {
        flags |= libc::WNOWAIT;
    }
    if !block {
        flags |= libc::WNOHANG;
    }
    let (idtype, id) = match child {
        Wait::Pidfd(fd) => (libc::P_PIDFD, fd.as_raw_fd() as libc::id_t),
        Wait::Pid(pid) => (libc::P_PID, pid as libc::id_t),
    };
    loop {
        // SAFETY: zeroed siginfo_t is a valid output buffer for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: integers and a valid out-pointer; the id names a child
        // of ours (a pidfd we own, or an unreaped pid).
        let ret = unsafe { libc::waitid(idtype, id, &mut info, flags) };
        match cvt(ret) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
            Ok(_) => {
                // SAFETY: waitid filled the SIGCHLD fields of info (or left
                // si_pid 0 under WNOHANG when nothing changed).
                let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
                if pid == 0 {
                    return Ok(None);
                }
                return Ok(Some(match info.si_code {
                    libc::CLD_EXITED => Exit::Code(status),
                    _ => Exit::Signal(status),
                }));
            }
        }
    }
}

/// Does this error mean the kernel (or a seccomp policy) does not offer
/// the call or the flag, so its fallback must be used? EINVAL and ENOSYS
/// from older kernels, EPERM (or ENOSYS) from seccomp policies: for
/// `clone(CLONE_PIDFD)` and `waitid(P_PIDFD)` (the pid path), `memfd_create`,
/// `splice`, `tee` and `sendfile`.
pub fn refused(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS | libc::EPERM))
}

/// The next unreported stop of a child of ours (a stop is reported once):
/// its pid and the signal that stopped it. Never reaps; `None` when no
/// child stopped since the last call.
pub fn stopped_child() -> Option<(libc::pid_t, libc::c_int)> {
    // SAFETY: zeroed siginfo_t is a valid output buffer for waitid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: P_ALL with WSTOPPED | WNOHANG (no WEXITED) only consumes stop
    // reports; info is a valid out-pointer.
    let ret = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WSTOPPED | libc::WNOHANG) };
    // SAFETY: waitid filled the SIGCHLD fields (si_pid 0: nothing to report).
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    (ret == 0 && pid != 0 && info.si_code == libc::CLD_STOPPED).then_some((pid, status))
}

/// The process group of `pid` (`None` if it is gone).
pub fn getpgid(pid: libc::pid_t) -> Option<libc::pid_t> {
    // SAFETY: getpgid takes an integer.
    let pgid = unsafe { libc::getpgid(pid) };
    (pgid > 0).then_some(pgid)
}

/// Reaps exited children that are not `keep` (orphans re-parented to us as
/// a subreaper), without blocking; stops at the first child it must keep.
pub fn reap_orphans(keep: &[libc::pid_t]) {
    loop {
        // SAFETY: zeroed siginfo_t is a valid output buffer for waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: P_ALL with WNOWAIT only peeks; info is a valid out-pointer.
        let ret =
            unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT) };
        if ret != 0 {
            return;
        }
        // SAFETY: waitid filled the SIGCHLD fields (si_pid 0: none exited).
        let pid = unsafe { info.si_pid() };
        if pid == 0 || keep.contains(&pid) {
            return;
        }
        let mut status = 0;
        // SAFETY: pid is an exited child of ours; status is a valid out-pointer.
        unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    }
}

/// After SIGKILL to process group `pgid` (whose leader retry reaped):
/// reaps the members as they die and become retry's children (retry is a
/// subreaper), until no process of the group is left or `limit` passes —
/// so nothing of a killed attempt outlives it, not even as a zombie.
pub fn reap_group(pgid: libc::pid_t, limit: Duration) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        loop {
            // SAFETY: zeroed siginfo_t is a valid output buffer for waitid.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: P_PGID with WNOHANG reaps at most one exited child of
            // ours in that group; info is a valid out-pointer.
            let ret = unsafe {
                libc::waitid(libc::P_PGID, pgid as libc::id_t, &mut info, libc::WEXITED | libc::WNOHANG)
            };
            // SAFETY: waitid filled the SIGCHLD fields (si_pid 0: none).
            if ret != 0 || unsafe { info.si_pid() } == 0 {
                break;
            }
        }
        if !group_exists(pgid) || std::time::Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Makes retry a child subreaper: orphaned descendants of an attempt are
/// re-parented to retry (not to a PID 1 that may never reap them), so
/// retry can reap them and nothing of an attempt is left as a zombie.
pub fn become_subreaper() {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
}

/// Opens /dev/null on any of fds 0, 1, 2 that is closed, so pipes retry
/// creates never land on them.
pub fn ensure_std_fds() {
    for fd in 0..3 {
        // SAFETY: F_GETFD on any integer is harmless.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
            // SAFETY: open with a static C string; the lowest free fd is fd.
            unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_RDWR) };
        }
    }
}

/// Is `fd` a FIFO (pipe)?
pub fn is_fifo(fd: RawFd) -> bool {
    has_type(fd, libc::S_IFIFO)
}

/// Is `fd` the write end of a pipe whose readers are all gone?
pub fn pipe_is_broken(fd: RawFd) -> bool {
    let mut fds = [pollfd(fd, libc::POLLOUT)];
    matches!(poll(&mut fds, Some(Duration::ZERO)), Ok(1) if fds[0].revents & libc::POLLERR != 0)
}

/// Runs `handler` for `sig` (SA_RESTART: an interrupted system call of
/// another part of retry is restarted, not failed with EINTR). The handler
/// must be async-signal-safe and keep errno ([`SavedErrno`]).
pub fn catch(sig: libc::c_int, handler: extern "C" fn(libc::c_int)) -> io::Result<()> {
    // SAFETY: a zeroed sigaction is valid (empty mask, no flags); the
    // handler is a plain function that lives as long as the program.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = handler as libc::sighandler_t;
    action.sa_flags = libc::SA_RESTART;
    // SAFETY: sigaction reads `action`; the old action is not wanted.
    cvt(unsafe { libc::sigaction(sig, &action, std::ptr::null_mut()) })?;
    Ok(())
}

/// errno as it was when created, put back when dropped: a signal handler
/// that makes a system call must not change the errno of the code it
/// interrupted.
pub struct SavedErrno(libc::c_int);

impl SavedErrno {
    #[allow(clippy::new_without_default)]
    pub fn new() -> SavedErrno {
        // SAFETY: errno is this thread's; reading it is always allowed.
        SavedErrno(unsafe { *libc::__errno_location() })
    }
}

impl Drop for SavedErrno {
    fn drop(&mut self) {
        // SAFETY: writes this thread's errno.
        unsafe { *libc::__errno_location() = self.0 };
    }
}

/// Calls `f` with each `NAME=value` entry of retry's environment, as the
/// C runtime keeps it: no copy of the whole environment first (std's
/// `vars_os` makes two strings per variable). retry never changes its own
/// environment (no `setenv`), so the array is stable while it is read.
pub fn each_env(mut f: impl FnMut(&CStr)) {
    unsafe extern "C" {
        static environ: *const *const libc::c_char;
    }
    // SAFETY: `environ` is the C runtime's NULL-terminated array of
    // NUL-terminated strings (or null); nothing in retry modifies it.
    unsafe {
        let mut p = environ;
        if p.is_null() {
            return;
        }
        while !(*p).is_null() {
            f(CStr::from_ptr(*p));
            p = p.add(1);
        }
    }
}

/// Ignores SIGPIPE, as std's runtime does before `main` (retry's binary
/// skips that start-up): writes to a pipe without readers fail with EPIPE.
pub fn ignore_sigpipe() {
    // SAFETY: signal() with a constant disposition, no handler code.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
}

pub fn isatty(fd: RawFd) -> bool {
    // SAFETY: isatty takes an integer.
    unsafe { libc::isatty(fd) == 1 }
}

/// Ends retry by signal `sig` after cleanup, as GNU timeout does: default
/// disposition, unblocked, core dumps off; then `raise`. Returns only if
/// the signal did not end the process (e.g. SIGCHLD-like defaults). A stop
/// signal (an attempt stopped by SIGTTIN is 128+21) is not raised: it
/// would stop retry, not end it.
pub fn die_by_signal(sig: libc::c_int) {
    if matches!(sig, libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU) {
        return;
    }
    run_exit_hook();
    let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain libc calls with valid pointers to local structs.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &zero);
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::raise(sig);
    }
}

/// What must run before retry ends (its guardian is dismissed), whether it
/// returns from `main` or dies by a re-raised signal.
static EXIT_HOOK: OnceLock<fn()> = OnceLock::new();

/// Registers `hook` to run once before retry ends: at a normal exit
/// (`atexit`) and in [`die_by_signal`]. Only the first registration counts.
pub fn at_exit(hook: fn()) {
    extern "C" fn run() {
        run_exit_hook();
    }
    if EXIT_HOOK.set(hook).is_ok() {
        // SAFETY: atexit stores a function pointer to a function that lives
        // as long as the program.
        unsafe { libc::atexit(run) };
    }
}

fn run_exit_hook() {
    if let Some(hook) = EXIT_HOOK.get() {
        hook();
    }
}

/// For a guardian whose retry died: SIGKILLs process group `pgid` and
/// returns once none of its members runs any more (zombies waiting for a
/// parent that may never reap them do not count). Allocates nothing and
/// calls only async-signal-safe functions: it runs in a process that
/// shares the dead retry's memory, where a lock of the allocator may be
/// held forever.
pub fn kill_group_and_wait(pgid: libc::pid_t) {
    if pgid <= 0 {
        return;
    }
    let mut pause_ms = 1;
    loop {
        // Again each round: harmless, and a member that was being created
        // during the first SIGKILL is caught by the next.
        kill(-pgid, libc::SIGKILL);
        if !group_exists(pgid) || !group_runs(pgid) {
            return;
        }
        let ts = libc::timespec { tv_sec: 0, tv_nsec: pause_ms * 1_000_000 };
        // SAFETY: nanosleep reads a local timespec; no remainder wanted.
        unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
        pause_ms = (pause_ms * 2).min(20);
    }
}

/// Does a process of group `pgid` still run (any state but zombie)? Reads
/// `/proc/N/stat` of every process, without allocating. When `/proc`
/// cannot be read, answers yes: the caller then waits for the group to be
/// gone altogether.
fn group_runs(pgid: libc::pid_t) -> bool {
    // SAFETY: open with a static C string.
    let dir = unsafe { libc::open(c"/proc".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if dir < 0 {
        return true;
    }
    let mut buf = [0u8; 4096];
    let mut runs = false;
    'scan: loop {
        // SAFETY: getdents64 writes at most buf.len() bytes into buf.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len()) };
        let Ok(n) = usize::try_from(n) else { break };
        if n == 0 {
            break;
        }
        // struct linux_dirent64: u64 ino, i64 off, u16 reclen, u8 type, name.
        let mut at = 0;
        while at + 19 < n {
            let reclen = usize::from(u16::from_ne_bytes([buf[at + 16], buf[at + 17]]));
            if reclen < 20 || at + reclen > n {
                break 'scan;
            }
            let name = &buf[at + 19..at + reclen];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(name.len())];
            if !name.is_empty() && name.iter().all(u8::is_ascii_digit) && member_runs(dir, name, pgid) {
                runs = true;
                break 'scan;
            }
            at += reclen;
        }
    }
    // SAFETY: closes the fd opened above.
    unsafe { libc::close(dir) };
    runs
}

/// Is process `name` (a pid in `/proc`, the directory `dir`) a running
/// member of group `pgid`? From its `stat`: `pid (comm) state ppid pgrp …`.
fn member_runs(dir: RawFd, name: &[u8], pgid: libc::pid_t) -> bool {
    let mut path = [0u8; 32];
    if name.len() + 6 > path.len() {
        return false;
    }
    path[..name.len()].copy_from_slice(name);
    path[name.len()..name.len() + 6].copy_from_slice(b"/stat\0");
    // SAFETY: path is NUL-terminated; dir is an open directory fd.
    let fd = unsafe { libc::openat(dir, path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return false;
    }
    let mut stat = [0u8; 512];
    // SAFETY: read writes at most stat.len() bytes into stat.
    let n = unsafe { libc::read(fd, stat.as_mut_ptr().cast(), stat.len()) };
    // SAFETY: closes the fd opened above.
    unsafe { libc::close(fd) };
    let Ok(n) = usize::try_from(n) else { return false };
    let stat = &stat[..n];
    // The command name may hold spaces and parentheses: fields start
    // after the last ')'.
    let Some(end) = stat.iter().rposition(|&b| b == b')') else { return false };
    let mut fields = stat[end + 1..].split(|&b| b == b' ').filter(|f| !f.is_empty());
    let state = fields.next().and_then(|f| f.first().copied());
    let pgrp = fields.nth(1).map(|f| {
        f.iter().try_fold(0 as libc::pid_t, |acc, &b| {
            b.is_ascii_digit().then(|| acc.saturating_mul(10).saturating_add(libc::pid_t::from(b - b'0')))
        })
    });
    pgrp == Some(Some(pgid)) && !matches!(state, Some(b'Z' | b'X') | None)
}

/// Caps this process's data segment (heap and private mappings), so a
/// runaway predicate fails an allocation instead of eating the machine.
pub fn limit_data(bytes: u64) {
    let lim = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
    // SAFETY: setrlimit reads a local struct.
    unsafe { libc::setrlimit(libc::RLIMIT_DATA, &lim) };
}

/// Physical memory in bytes (0 if unknown).
pub fn physical_memory() -> u64 {
    // SAFETY: sysconf takes an integer.
    let (pages, size) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
    u64::try_from(pages).unwrap_or(0).saturating_mul(u64::try_from(size).unwrap_or(0))
}

/// `flock(2)` on a descriptor: `exclusive` or shared, waiting (`block`)
/// or not. `Ok(false)`: another descriptor holds a conflicting lock
/// (EWOULDBLOCK under `block == false`). EINTR is retried.
pub fn flock(fd: BorrowedFd<'_>, exclusive: bool, block: bool) -> io::Result<bool> {
    let mut op = if exclusive { libc::LOCK_EX } else { libc::LOCK_SH };
    if !block {
        op |= libc::LOCK_NB;
    }
    loop {
        // SAFETY: flock takes an fd borrowed for the call and an int.
        match cvt(unsafe { libc::flock(fd.as_raw_fd(), op) }) {
            Ok(_) => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
}

/// `flock(fd, LOCK_EX | LOCK_NB)`: `Ok(true)` when this descriptor now
/// holds the exclusive lock, `Ok(false)` when another open file
/// description holds a lock on the file. The lock lives as long as the
/// open file description (so it dies with the process, even by SIGKILL).
pub fn try_lock(fd: BorrowedFd<'_>) -> io::Result<bool> {
    flock(fd, true, false)
}

/// Releases a `flock` held through `fd` (closing the last descriptor of
/// the open file does the same).
pub fn funlock(fd: BorrowedFd<'_>) {
    // SAFETY: flock takes an fd borrowed for the call and an int; LOCK_UN
    // cannot block.
    unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_UN) };
}

/// The effective user id, which owns the files retry creates.
pub fn euid() -> u32 {
    // SAFETY: geteuid takes nothing and cannot fail.
    unsafe { libc::geteuid() }
}
