//! The few system calls the testnet needs that std does not wrap: TAP
//! devices, entering a network namespace, signals and `poll`, through
//! `nix`. Every `unsafe` of the workspace lives here, each block with the
//! reason it is sound; what remains unsafe is what has no safe wrapper
//! (an ioctl, `pre_exec`, installing a signal handler, `setpriority`,
//! reading the allocator's counters).
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{self as nix_signal, SigHandler, Signal as NixSignal};
use nix::sys::time::TimeSpec;
use nix::unistd::Pid;

/// `_IOW('T', 202, int)` from `<linux/if_tun.h>`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` as TUNSETIFF reads it: the name, the flags, and the rest
/// of the union, zero. Built without `unsafe` (all-zero `libc::ifreq` needs
/// `mem::zeroed`); the same size and layout as `libc::ifreq`.
#[repr(C)]
struct TapRequest {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    rest: [u8; std::mem::size_of::<libc::ifreq>() - libc::IFNAMSIZ - 2],
}

const _: () = assert!(std::mem::size_of::<TapRequest>() == std::mem::size_of::<libc::ifreq>());

nix::ioctl_readwrite_bad!(tun_set_iff, TUNSETIFF, TapRequest);

/// Creates a TAP device called `name` (at most 15 bytes) in the calling
/// thread's network namespace and answers its file, non-blocking: reads
/// give whole Ethernet frames, writes send one. The device disappears when
/// the file is closed.
pub fn open_tap(name: &str) -> io::Result<File> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ', '\0']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{name}` is not a valid interface name (1 to 15 bytes)"),
        ));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open /dev/net/tun: {e}")))?;
    let mut ifr = TapRequest {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI,
        rest: [0; std::mem::size_of::<libc::ifreq>() - libc::IFNAMSIZ - 2],
    };
    for (dst, src) in ifr.name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: an ioctl has no safe wrapper. TUNSETIFF reads (and may write
    // back the name into) a `struct ifreq`; `ifr` has its size and layout
    // and lives for the whole call; the fd is open.
    if let Err(e) = unsafe { tun_set_iff(file.as_raw_fd(), &raw mut ifr) } {
        let e = io::Error::from(e);
        return Err(io::Error::new(
            e.kind(),
            format!("cannot create TAP {name}: {e}"),
        ));
    }
    Ok(file)
}

/// Moves the calling thread into the network namespace at `path`
/// (`/run/netns/NAME`). Only this thread moves; sockets it opens afterwards
/// live in that namespace, whichever thread uses them later.
pub fn enter_netns(path: &Path) -> io::Result<()> {
    let file = File::open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| {
        let e = io::Error::from(e);
        io::Error::new(e.kind(), format!("cannot enter {}: {e}", path.display()))
    })
}

/// Waits until one of `fds` is readable or `timeout` passes; answers which
/// are readable. Interrupted waits answer none.
pub fn poll_readable(fds: &[BorrowedFd<'_>], timeout: Duration) -> io::Result<Vec<bool>> {
    let mut polls: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
        .collect();
    match ppoll(&mut polls, Some(TimeSpec::from_duration(timeout)), None) {
        Ok(_) => {}
        Err(nix::errno::Errno::EINTR) => return Ok(vec![false; fds.len()]),
        Err(e) => return Err(e.into()),
    }
    let ready = PollFlags::POLLIN | PollFlags::POLLERR | PollFlags::POLLHUP;
    Ok(polls
        .iter()
        .map(|p| p.revents().is_some_and(|r| r.intersects(ready)))
        .collect())
}

/// Signals a process may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGKILL: a crash.
    Kill,
    /// SIGTERM: a polite stop.
    Term,
    /// SIGSTOP: frozen, as a starved or swapped-out process.
    Stop,
    /// SIGCONT: thawed.
    Cont,
}

/// Sends `signal` to process `pid`.
pub fn signal(pid: u32, signal: Signal) -> io::Result<()> {
    let sig = match signal {
        Signal::Kill => NixSignal::SIGKILL,
        Signal::Term => NixSignal::SIGTERM,
        Signal::Stop => NixSignal::SIGSTOP,
        Signal::Cont => NixSignal::SIGCONT,
    };
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "pid out of range"))?;
    nix_signal::kill(Pid::from_raw(pid), sig)?;
    Ok(())
}

/// Whether process `pid` exists (zombies included).
pub fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Makes the child killed (SIGKILL) when the thread that spawns it exits:
/// spawn from a thread that lives as long as the child should.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: `pre_exec` is unsafe in std (no safe way to run code between
    // fork and exec). The closure only calls prctl(2), which is
    // async-signal-safe, and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(NixSignal::SIGKILL)?;
            Ok(())
        });
    }
}

/// Makes the child the leader of a new session, detached from the
/// terminal (for the `testnet up` daemon).
pub fn detach(cmd: &mut Command) {
    // SAFETY: as above: only setsid(2), async-signal-safe. (std's safe
    // `process_group` makes a new process group, not a new session.)
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            Ok(())
        });
    }
}

/// Raises the calling thread's scheduling priority (nice -15): the WAN
/// emulator must not be starved by the nodes it carries, or the testnet
/// would measure the emulator. Failure (no privilege) is harmless.
pub fn raise_thread_priority() -> io::Result<()> {
    let tid = nix::unistd::gettid().as_raw() as libc::id_t;
    // SAFETY: nix has no wrapper for setpriority(2), which has no
    // memory-safety preconditions; PRIO_PROCESS with a thread id changes
    // only that thread on Linux.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, -15) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Turns SIGINT and SIGTERM into a flag ([`interrupted`]) so that a run
/// stopped by Ctrl-C still removes what it created.
pub fn catch_interrupts() {
    let handler = SigHandler::Handler(on_interrupt);
    // SAFETY: installing a handler is unsafe in nix (the handler must be
    // async-signal-safe); this one only stores to an atomic, which is.
    unsafe {
        let _ = nix_signal::signal(NixSignal::SIGINT, handler);
        let _ = nix_signal::signal(NixSignal::SIGTERM, handler);
    }
}

/// Whether SIGINT or SIGTERM arrived since [`catch_interrupts`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Bytes the C allocator (glibc's malloc, which Rust's global allocator
/// uses here) has handed out and not taken back: `mallinfo2`'s in-use
/// small blocks plus its mmapped large ones. For measuring what a data
/// structure holds, by difference.
pub fn heap_in_use() -> usize {
    // SAFETY: mallinfo2 takes no arguments and returns a plain struct of
    // counters by value; it only reads the allocator's own statistics.
    let info = unsafe { libc::mallinfo2() };
    info.uordblks + info.hblkhd
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::os::unix::net::{UnixDatagram, UnixStream};
    use std::os::unix::process::ExitStatusExt;
    use std::time::Instant;

    use super::*;

    #[test]
    fn poll_tells_which_sockets_are_readable_and_waits_no_longer_than_asked() {
        let (a, b) = UnixDatagram::pair().unwrap();
        let (c, d) = UnixDatagram::pair().unwrap();
        let started = Instant::now();
        let ready = poll_readable(&[a.as_fd(), c.as_fd()], Duration::from_millis(50)).unwrap();
        assert_eq!(ready, [false, false]);
        assert!(started.elapsed() >= Duration::from_millis(45));
        b.send(b"x").unwrap();
        let ready = poll_readable(&[a.as_fd(), c.as_fd()], Duration::from_secs(5)).unwrap();
        assert_eq!(ready, [true, false]);
        drop(d);
        // A stream whose peer closed is "readable" too (the read then says so).
        let (e, f) = UnixStream::pair().unwrap();
        drop(f);
        let ready = poll_readable(&[e.as_fd(), c.as_fd()], Duration::from_secs(5)).unwrap();
        assert_eq!(ready, [true, false]);
    }

    /// The state letter of process `pid` in /proc (R, S, T, Z...).
    fn state(pid: u32) -> char {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let after = stat.rsplit_once(") ").unwrap().1;
        after.chars().next().unwrap()
    }

    fn eventually(mut check: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !check() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    #[test]
    fn signals_stop_continue_and_kill_a_process() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id();
        assert!(process_exists(pid));
        signal(pid, Signal::Stop).unwrap();
        assert!(
            eventually(|| state(pid) == 'T'),
            "not stopped: {}",
            state(pid)
        );
        signal(pid, Signal::Cont).unwrap();
        assert!(eventually(|| state(pid) != 'T'), "not continued");
        signal(pid, Signal::Kill).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(!process_exists(pid));
        // No such process: an error, not a panic.
        assert!(signal(pid, Signal::Term).is_err());
        assert!(signal(u32::MAX, Signal::Term).is_err());
    }

    #[test]
    fn a_detached_child_leads_its_own_session() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "cut -d' ' -f6 /proc/self/stat; echo $$"]);
        detach(&mut cmd);
        die_with_parent(&mut cmd);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        // /proc/self is `cut`, whose session is the shell's: the shell's pid.
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(
            lines[0], lines[1],
            "the session is not the child's own: {text}"
        );
    }

    #[test]
    fn a_tap_device_is_created_in_a_namespace_of_the_test_s_own() {
        // A thread of its own in a new network namespace: the device lives
        // there and goes with the thread; nothing is sent.
        let outcome = std::thread::spawn(|| {
            if let Err(e) = nix::sched::unshare(CloneFlags::CLONE_NEWNET) {
                return Err(format!("cannot unshare the network namespace: {e}"));
            }
            let tap = open_tap("baton-t0").map_err(|e| e.to_string())?;
            // The name is taken while the file is open...
            let taken = open_tap("baton-t0").map(drop).unwrap_err();
            assert!(
                taken.to_string().starts_with("cannot create TAP baton-t0"),
                "{taken}"
            );
            drop(tap);
            // ...and free again once it is closed.
            open_tap("baton-t0").map(drop).map_err(|e| e.to_string())
        })
        .join()
        .unwrap();
        match outcome {
            Ok(()) => {}
            Err(why) if !Path::new("/dev/net/tun").exists() || why.contains("unshare") => {
                assert!(
                    std::env::var("CI").map_or(true, |v| v != "true"),
                    "CI must run this test: {why}"
                );
                eprintln!("skipping: {why}");
            }
            Err(why) => panic!("{why}"),
        }
    }

    #[test]
    fn bad_tap_names_and_namespaces_are_errors() {
        for name in ["", "a/b", "a b", "sixteen-bytes-xx"] {
            let err = open_tap(name).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{name}");
        }
        let err = enter_netns(Path::new("/nonexistent/netns")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/netns"), "{err}");
        // Not a namespace file: setns refuses it.
        let err = enter_netns(Path::new("/proc/self/stat")).unwrap_err();
        assert!(
            err.to_string().starts_with("cannot enter /proc/self/stat"),
            "{err}"
        );
    }
}
