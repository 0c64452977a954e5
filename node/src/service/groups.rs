//! The process groups of `exec` sessions, recorded in the data directory
//! (`exec-groups`) so that a node restarted after a crash ends whatever its
//! previous run left running. The parent-death signal (see `exec`) kills a
//! session's command with the node, but not what that command started.
//!
//! A group id may be reused once its group is empty, so a recorded group
//! is only signalled if one of its processes carries this run's marker in
//! its environment ([`MARKER`]=token, inherited by whatever the command
//! starts): an unrelated group that got the same id is left alone.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// The record's file name in the data directory.
pub const FILE: &str = "exec-groups";

/// Environment variable set for every `exec` command: the token of the
/// node run that started it.
pub const MARKER: &str = "BATON_EXEC_RUN";

/// Largest record read back (a line per live group).
const MAX_RECORD: u64 = 1 << 20;

/// The groups this run of the node has running, mirrored to [`FILE`].
#[derive(Debug)]
pub struct Groups {
    path: PathBuf,
    token: String,
    live: Mutex<BTreeSet<u32>>,
}

impl Groups {
    /// Ends the groups that a previous run recorded in `data_dir` and that
    /// still run (SIGTERM, then SIGKILL after `grace`), and starts this
    /// run's record. Returns the record and the groups ended.
    ///
    /// Call it only while holding the data directory's lock: a live node's
    /// groups are not leftovers.
    pub async fn reap_and_open(data_dir: &Path, grace: Duration) -> io::Result<(Groups, Vec<u32>)> {
        let path = data_dir.join(FILE);
        let ended = match read_record(&path) {
            Ok(Some((token, groups))) => reap(&token, &groups, grace).await,
            Ok(None) => Vec::new(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the exec process groups of the previous run; none ended");
                Vec::new()
            }
        };
        let groups = Groups {
            path,
            token: format!("{:016x}", rand::random::<u64>()),
            live: Mutex::new(BTreeSet::new()),
        };
        groups.save(&BTreeSet::new())?;
        Ok((groups, ended))
    }

    /// The environment variable every command of this run carries.
    pub fn marker(&self) -> (&'static str, &str) {
        (MARKER, &self.token)
    }

    /// Records a group just started.
    pub fn add(&self, pgid: u32) {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.insert(pgid);
        self.save_or_warn(&live);
    }

    /// Forgets a group that was ended.
    pub fn remove(&self, pgid: u32) {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        if live.remove(&pgid) {
            self.save_or_warn(&live);
        }
    }

    fn save_or_warn(&self, live: &BTreeSet<u32>) {
        if let Err(e) = self.save(live) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot record the exec process groups: a restart after a crash may not end them");
        }
    }

    /// Writes the record: to a temporary file, renamed over the old one.
    fn save(&self, live: &BTreeSet<u32>) -> io::Result<()> {
        let mut text = format!(
            "# Process groups of exec sessions of batond pid {}; a batond restarted on this \
             data directory ends those still running.\nrun {}\n",
            std::process::id(),
            self.token
        );
        for pgid in live {
            text.push_str(&format!("{pgid}\n"));
        }
        let tmp = self.path.with_extension("tmp");
        let mut file = crate::data_dir::open_private(&tmp, false)?;
        file.set_len(0)?;
        file.write_all(text.as_bytes())?;
        std::fs::rename(&tmp, &self.path)
    }
}

/// The token and the groups of a record; `None` when there is none.
fn read_record(path: &Path) -> io::Result<Option<(String, Vec<u32>)>> {
    let mut text = String::new();
    match std::fs::File::open(path) {
        Ok(file) => file.take(MAX_RECORD).read_to_string(&mut text)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut token = None;
    let mut groups = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(t) = line.strip_prefix("run ") {
            token = Some(t.trim().to_string());
        } else if let Ok(pgid) = line.parse::<u32>() {
            // 0 and 1 would signal the caller's own group or init's.
            if pgid > 1 {
                groups.push(pgid);
            }
        }
    }
    Ok(token.map(|t| (t, groups)))
}

/// Ends the groups among `groups` that carry `token`; returns those.
async fn reap(token: &str, groups: &[u32], grace: Duration) -> Vec<u32> {
    let ours: Vec<u32> = groups
        .iter()
        .copied()
        .filter(|&pgid| {
            let members = proc::members(pgid);
            let marked = members.iter().any(|&pid| proc::has_marker(pid, token));
            if !members.is_empty() && !marked {
                tracing::warn!(pgid, "a process group recorded by the previous run is running, but none of its processes carries its marker: left alone (see `ps -g {pgid}`)");
            }
            marked
        })
        .collect();
    if ours.is_empty() {
        return ours;
    }
    tracing::warn!(groups = ?ours, "ending exec process groups left running by a previous run of this node (it did not stop cleanly)");
    for &pgid in &ours {
        super::exec::signal_group(Some(pgid), super::exec::Signal::Term);
    }
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline
        && ours.iter().any(|&g| !proc::members(g).is_empty())
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for &pgid in &ours {
        super::exec::signal_group(Some(pgid), super::exec::Signal::Kill);
    }
    ours
}

/// What `/proc` says about processes (Linux); elsewhere nothing is known,
/// and nothing is ended.
mod proc {
    /// Live (not zombie) processes of process group `pgid`.
    #[cfg(target_os = "linux")]
    pub fn members(pgid: u32) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| {
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    return false;
                };
                // "pid (comm) state ppid pgrp ...": comm may hold anything,
                // so fields are counted from its closing parenthesis.
                let Some((_, rest)) = stat.rsplit_once(')') else {
                    return false;
                };
                let mut fields = rest.split_whitespace();
                let state = fields.next();
                let group = fields.nth(1).and_then(|g| g.parse::<u32>().ok());
                state != Some("Z") && state != Some("X") && group == Some(pgid)
            })
            .collect()
    }

    /// Whether process `pid` has the marker with `token` in its environment.
    #[cfg(target_os = "linux")]
    pub fn has_marker(pid: u32, token: &str) -> bool {
        let wanted = format!("{}={token}", super::MARKER);
        std::fs::read(format!("/proc/{pid}/environ"))
            .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == wanted.as_bytes()))
    }

    #[cfg(not(target_os = "linux"))]
    pub fn members(_pgid: u32) -> Vec<u32> {
        Vec::new()
    }

    #[cfg(not(target_os = "linux"))]
    pub fn has_marker(_pid: u32, _token: &str) -> bool {
        false
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command};

    use super::*;

    /// A process group `sh -c SCRIPT` leads, with the environment `env`;
    /// killed (with its group) and reaped on drop.
    struct Planted(Child);

    impl Planted {
        fn new(script: &str, env: &[(&str, &str)]) -> Planted {
            let mut command = Command::new("sh");
            command.args(["-c", script]).process_group(0);
            for (k, v) in env {
                command.env(k, v);
            }
            Planted(command.spawn().unwrap())
        }

        fn pgid(&self) -> u32 {
            self.0.id()
        }

        /// Kills the leader alone, as the parent-death signal would.
        fn kill_leader(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    impl Drop for Planted {
        fn drop(&mut self) {
            super::super::exec::signal_group(Some(self.pgid()), super::super::exec::Signal::Kill);
            let _ = self.0.wait();
        }
    }

    fn temp(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("baton-groups-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    async fn until(what: impl Fn() -> bool) -> bool {
        for _ in 0..200 {
            if what() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_restart_ends_the_marked_groups_of_the_previous_run_only() {
        let dir = temp("reap");
        let token = "00000000feedbeef";
        // A leftover whose leader died (its child ignores SIGTERM, so only
        // SIGKILL ends it), a leftover leader, and a group that is not ours.
        let mut orphaned = Planted::new("trap '' TERM; sleep 1000 & wait", &[(MARKER, token)]);
        let leader = Planted::new("sleep 1000", &[(MARKER, token)]);
        let foreign = Planted::new("sleep 1000", &[(MARKER, "someone-else")]);
        assert!(until(|| proc::members(orphaned.pgid()).len() == 2).await);
        orphaned.kill_leader();
        assert_eq!(proc::members(orphaned.pgid()).len(), 1);
        assert!(until(|| !proc::members(leader.pgid()).is_empty()).await);
        std::fs::write(
            dir.join(FILE),
            format!(
                "# a record\nrun {token}\n{}\n{}\n{}\n0\n1\n",
                orphaned.pgid(),
                leader.pgid(),
                foreign.pgid()
            ),
        )
        .unwrap();
        let (groups, ended) = Groups::reap_and_open(&dir, Duration::from_millis(300))
            .await
            .unwrap();
        assert_eq!(ended, [orphaned.pgid(), leader.pgid()]);
        assert!(until(|| proc::members(orphaned.pgid()).is_empty()).await);
        assert!(until(|| proc::members(leader.pgid()).is_empty()).await);
        assert!(
            !proc::members(foreign.pgid()).is_empty(),
            "not ours: left alone"
        );
        // The new run's record names its own token and no group yet.
        let (new_token, recorded) = read_record(&dir.join(FILE)).unwrap().unwrap();
        assert_eq!(new_token, groups.marker().1);
        assert_ne!(new_token, token);
        assert!(recorded.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn the_record_follows_the_groups_of_this_run() {
        let dir = temp("record");
        let (groups, ended) = Groups::reap_and_open(&dir, Duration::from_millis(10))
            .await
            .unwrap();
        assert!(ended.is_empty());
        groups.add(4321);
        groups.add(4400);
        groups.remove(4321);
        groups.remove(9999);
        let (token, recorded) = read_record(&dir.join(FILE)).unwrap().unwrap();
        assert_eq!((token.as_str(), recorded), (groups.marker().1, vec![4400]));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
