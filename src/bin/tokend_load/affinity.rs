//! CPU affinity: which CPUs this process may use, confining it (every
//! thread) or a child it starts (before exec, so every thread the child
//! creates inherits it) to one CPU, and which CPUs the threads of a running
//! process may use, read back from the kernel.

use super::error::{Context, LoadError, Result};
use serde::Serialize;
use std::collections::BTreeSet;
use std::process::Command;

/// CPUs a `cpu_set_t` can name (0 to this, exclusive).
pub const MAX_CPUS: usize = libc::CPU_SETSIZE as usize;

/// The set holding CPU `cpu` alone (`cpu` below [`MAX_CPUS`]).
fn one_cpu(cpu: usize) -> Result<libc::cpu_set_t> {
    if cpu >= MAX_CPUS {
        return Err(LoadError::new(format!(
            "CPU {cpu}: CPUs are numbered below {MAX_CPUS}"
        )));
    }
    // SAFETY: cpu_set_t is a plain bit array; all zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE, the set's size in bits.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    Ok(set)
}

/// The CPUs of a set.
fn members(set: &libc::cpu_set_t) -> BTreeSet<usize> {
    // SAFETY: every index is below CPU_SETSIZE.
    (0..MAX_CPUS)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, set) })
        .collect()
}

/// The CPUs thread `tid` may run on (0: the calling thread).
fn thread_cpus(tid: libc::pid_t) -> std::io::Result<BTreeSet<usize>> {
    // SAFETY: as in `one_cpu`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity(2) writes at most the size given into `set`.
    let rc = unsafe { libc::sched_getaffinity(tid, std::mem::size_of_val(&set), &mut set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(members(&set))
}

/// The CPUs this process may run on (its affinity mask: the machine's CPUs
/// less those a cgroup or `taskset` took away).
pub fn allowed() -> Result<BTreeSet<usize>> {
    thread_cpus(0).context(|| "cannot read this process's CPU affinity".to_owned())
}

/// CPUs online on the machine (whatever this process may use).
pub fn online() -> Option<usize> {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(n).ok().filter(|&n| n > 0)
}

/// The ids of the threads of process `pid` (`self` for this one).
fn threads(pid: &str) -> Result<Vec<libc::pid_t>> {
    let dir = format!("/proc/{pid}/task");
    let entries = std::fs::read_dir(&dir).context(|| format!("cannot list {dir}"))?;
    Ok(entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect())
}

/// Confines every thread of this process to `cpu`; threads it starts later
/// inherit that.
pub fn pin_this_process(cpu: usize) -> Result<()> {
    let set = one_cpu(cpu)?;
    // The calling thread first, then every other one.
    let mut tids = vec![0];
    tids.extend(threads("self")?);
    for tid in tids {
        // SAFETY: sched_setaffinity(2) reads the set of the size given.
        let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            // A thread that ended since the listing has nothing to pin.
            if e.raw_os_error() == Some(libc::ESRCH) {
                continue;
            }
            return Err(LoadError::new(format!(
                "cannot pin thread {tid} of the load generator to CPU {cpu}: {e}"
            )));
        }
    }
    Ok(())
}

/// Makes the child of `command` run on `cpu` alone, from before its exec:
/// every thread it starts inherits that. Spawning fails if the kernel
/// refuses.
pub fn pin_command(command: &mut Command, cpu: usize) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let set = one_cpu(cpu)?;
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes a system call (sched_setaffinity) and reads errno.
    unsafe {
        command.pre_exec(move || {
            if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

/// The CPUs the threads of a process may run on, read from the kernel.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThreadCpus {
    /// Threads read (those that ended meanwhile are left out).
    pub threads: usize,
    /// Every CPU any of them may run on: the pinned CPU alone when the
    /// pinning held for every thread.
    pub cpus: Vec<usize>,
}

/// The CPUs the threads of process `pid` may run on.
pub fn process_cpus(pid: u32) -> Result<ThreadCpus> {
    let mut cpus = BTreeSet::new();
    let mut read = 0;
    for tid in threads(&pid.to_string())? {
        match thread_cpus(tid) {
            Ok(set) => {
                cpus.extend(set);
                read += 1;
            }
            // A thread that ended since the listing.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => {
                return Err(LoadError::new(format!(
                    "cannot read the CPU affinity of thread {tid} of process {pid}: {e}"
                )))
            }
        }
    }
    Ok(ThreadCpus {
        threads: read,
        cpus: cpus.into_iter().collect(),
    })
}

/// A set of CPUs the way the kernel writes one: `0-3,6`.
pub fn cpu_list(cpus: &BTreeSet<usize>) -> String {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for &cpu in cpus {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == cpu => *end = cpu,
            _ => ranges.push((cpu, cpu)),
        }
    }
    ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_cpu_lists_as_the_kernel_does() {
        let set = |cpus: &[usize]| cpus.iter().copied().collect::<BTreeSet<_>>();
        assert_eq!(cpu_list(&set(&[])), "");
        assert_eq!(cpu_list(&set(&[0])), "0");
        assert_eq!(cpu_list(&set(&[0, 1, 2, 3, 6])), "0-3,6");
        assert_eq!(cpu_list(&set(&[1, 3, 4])), "1,3-4");
    }

    #[test]
    fn reads_its_own_affinity_and_refuses_cpus_out_of_range() {
        let allowed = allowed().unwrap();
        assert!(!allowed.is_empty());
        let own = process_cpus(std::process::id()).unwrap();
        assert!(own.threads >= 1);
        assert!(own.cpus.iter().all(|c| allowed.contains(c)));
        assert!(one_cpu(MAX_CPUS).is_err());
        assert!(one_cpu(0).is_ok());
        assert!(online().unwrap() >= allowed.len());
    }
}
