//! The seal of an evaluation worker: what a `pequod __worker` gives up before it reads its
//! first request.
//!
//! The pool starts workers with an empty environment. A worker then sets `no_new_privs` (it
//! refuses to start without it) and restricts itself with Landlock: a ruleset that handles
//! every access right of the newest ABI this build knows and allows none of them, enforced in
//! best effort, so the kernel enforces all it supports: no file may be opened (on any ABI), no
//! TCP port bound or connected (ABI 4), no signal sent and no abstract UNIX socket reached
//! outside the worker (ABI 6), no UDP (ABI 10). Files opened before (its pipes) keep working.
//! A kernel without Landlock runs the worker unsealed; the worker says how far it is sealed
//! in its hello ([`SandboxStatus`]).
//!
//! [`SandboxProbe`] exists only so tests can prove the seal from inside a worker.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;

use landlock::{
    ABI, Access, AccessFs, AccessNet, RestrictionStatus, Ruleset, RulesetAttr, RulesetError,
    RulesetStatus, Scope,
};
use serde::{Deserialize, Serialize};

/// The newest Landlock ABI this build knows: the ruleset handles all of its access rights,
/// and the kernel enforces those it supports.
const NEWEST_ABI: ABI = ABI::V10;

/// How far a worker is sealed, as it reports in its hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxStatus {
    /// The Landlock ABI the worker's ruleset is enforced with; 0 when the kernel has no
    /// Landlock.
    pub landlock_abi: u32,
}

/// What a [`SandboxStatus`] amounts to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SandboxLevel {
    /// No file can be opened, no TCP port bound or connected (Landlock ABI 4 or later).
    Sealed,
    /// No file can be opened; the kernel cannot deny TCP (Landlock ABI 1 to 3).
    FilesystemOnly,
    /// The kernel has no Landlock: only the empty environment, `no_new_privs` and the import
    /// policy hold.
    Unsealed,
}

impl SandboxStatus {
    /// What the status amounts to.
    pub fn level(self) -> SandboxLevel {
        match self.landlock_abi {
            0 => SandboxLevel::Unsealed,
            1..=3 => SandboxLevel::FilesystemOnly,
            _ => SandboxLevel::Sealed,
        }
    }
}

impl fmt::Display for SandboxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let abi = self.landlock_abi;
        if abi == 0 {
            return write!(
                f,
                "no Landlock in this kernel: empty environment and no_new_privs only"
            );
        }
        let mut denied = vec!["opening any file"];
        if abi >= 4 {
            denied.push("TCP bind and connect");
        }
        if abi >= 6 {
            denied.push("signals and abstract UNIX sockets outside the worker");
        }
        if abi >= 10 {
            denied.push("UDP");
        }
        write!(
            f,
            "Landlock ABI {abi} denies {}; empty environment, no_new_privs",
            denied.join(", ")
        )
    }
}

/// Seals the calling process: `no_new_privs`, then the Landlock ruleset. Call it before any
/// other thread starts: the ruleset restricts the calling thread and the threads it starts
/// afterwards. Fails only when `no_new_privs` cannot be set or a kernel that has Landlock
/// refuses the ruleset; a kernel without Landlock gives [`SandboxLevel::Unsealed`].
pub(super) fn seal() -> io::Result<SandboxStatus> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only and touches no memory.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        let error = io::Error::last_os_error();
        return Err(io::Error::other(format!(
            "cannot set no_new_privs: {error}"
        )));
    }
    let status = restrict().map_err(|e| io::Error::other(format!("cannot seal: {e}")))?;
    let landlock_abi = match status.ruleset {
        RulesetStatus::NotEnforced => 0,
        _ => ABI::from(status.landlock).to_string().parse().unwrap_or(0),
    };
    Ok(SandboxStatus { landlock_abi })
}

fn restrict() -> Result<RestrictionStatus, RulesetError> {
    Ruleset::default()
        .handle_access(AccessFs::from_all(NEWEST_ABI))?
        .handle_access(AccessNet::from_all(NEWEST_ABI))?
        .scope(Scope::from_all(NEWEST_ABI))?
        .create()?
        .restrict_self()
}

/// Questions about a worker's own sandbox, answered from inside it without evaluating
/// anything. Only tests ask them ([`super::WorkerPool::probe`]), to prove the seal.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SandboxProbe {
    /// Files to open for reading (closed at once, never read).
    #[serde(default)]
    pub open: Vec<PathBuf>,
    /// TCP addresses to connect to.
    #[serde(default)]
    pub connect: Vec<SocketAddr>,
    /// TCP addresses to listen on.
    #[serde(default)]
    pub bind: Vec<SocketAddr>,
}

/// A worker's answers to a [`SandboxProbe`]: for each path or address asked, `Ok` when the
/// operation succeeded, else its error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxReport {
    /// Names of the environment variables the worker sees.
    pub environment: Vec<String>,
    /// Whether `no_new_privs` is set.
    pub no_new_privs: bool,
    /// Opening each file of [`SandboxProbe::open`].
    pub open: Vec<Result<(), String>>,
    /// Connecting to each address of [`SandboxProbe::connect`].
    pub connect: Vec<Result<(), String>>,
    /// Listening on each address of [`SandboxProbe::bind`].
    pub bind: Vec<Result<(), String>>,
}

/// Answers a probe from inside the worker.
pub(super) fn probe(probe: &SandboxProbe) -> SandboxReport {
    fn outcome<T>(result: io::Result<T>) -> Result<(), String> {
        result.map(drop).map_err(|e| e.to_string())
    }
    // SAFETY: PR_GET_NO_NEW_PRIVS takes integer arguments only and touches no memory.
    let no_new_privs = unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) } == 1;
    SandboxReport {
        environment: std::env::vars_os()
            .map(|(name, _)| name.to_string_lossy().into_owned())
            .collect(),
        no_new_privs,
        open: probe
            .open
            .iter()
            .map(|path| outcome(std::fs::File::open(path)))
            .collect(),
        connect: probe
            .connect
            .iter()
            .map(|addr| outcome(TcpStream::connect(addr)))
            .collect(),
        bind: probe
            .bind
            .iter()
            .map(|addr| outcome(TcpListener::bind(addr)))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_the_landlock_abi() {
        let status = |landlock_abi| SandboxStatus { landlock_abi };
        assert_eq!(status(0).level(), SandboxLevel::Unsealed);
        assert_eq!(status(3).level(), SandboxLevel::FilesystemOnly);
        assert_eq!(status(4).level(), SandboxLevel::Sealed);
        assert_eq!(
            status(7).to_string(),
            "Landlock ABI 7 denies opening any file, TCP bind and connect, signals and abstract \
             UNIX sockets outside the worker; empty environment, no_new_privs"
        );
        assert_eq!(
            status(0).to_string(),
            "no Landlock in this kernel: empty environment and no_new_privs only"
        );
    }
}
