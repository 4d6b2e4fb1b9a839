//! What a node changes on the machine, and how all of it is undone.
//!
//! A node is machine-wide: an address on `lo`, the `cni0` bridge, iptables
//! rules and ipsets, sysctls, mounts, cgroups, containerd's sockets. So only
//! one may run at a time ([`Lock`], an `flock` the kernel releases when its
//! holder dies, however it dies), and everything a node did is undone by
//! [`teardown`], which the next start also runs when the previous owner was
//! killed before it could (`kill -9`, a CI timeout). [`leftovers`] lists what
//! is still there, for the tests and for a start that failed to clean.
//!
//! Every command here is the system's own (`ip`, `iptables`, `ipset`,
//! `umount`); the workspace forbids `unsafe`, so nothing calls libc directly.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The node's own address (the API server's, the kubelet's, the ingress'),
/// on `lo`: this kernel has no `dummy` links, and a 127.x address is refused
/// as an advertise address.
pub const NODE_IP: &str = "10.200.0.1";
/// Pods' addresses: the cluster's range, and the node's share of it.
pub const CLUSTER_CIDR: &str = "10.88.0.0/16";
pub const POD_CIDR: &str = "10.88.0.0/24";
/// Services' ClusterIPs; the first is the API server's, `.10` CoreDNS'.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
pub const API_SERVICE_IP: &str = "10.96.0.1";
pub const DNS_SERVICE_IP: &str = "10.96.0.10";
/// The bridge the pods hang off.
pub const BRIDGE: &str = "cni0";
/// Machine-wide runtime state of the node: containerd's socket and state,
/// runc's state, network namespaces. Short, fixed paths: unix sockets allow
/// 108 bytes, and a later start must find what an earlier one left.
pub const RUN_DIR: &str = "/run/paysaga-node";
const LOCK_FILE: &str = "/run/paysaga-node.lock";
const RECORD_FILE: &str = "/run/paysaga-node.json";

/// Where a node's components and pods may leave files outside the node's
/// folder, whatever their configuration says: containerd 1.6 keeps its shims'
/// sockets under `/run/containerd/s`, the kubelet links every container's log
/// into `/var/log/containers` and keeps device-plugin sockets under
/// `/var/lib/kubelet`. Removed by the teardown unless they were there before.
const OUTSIDE_PATHS: &[&str] = &[
    "/run/containerd",
    "/var/log/containers",
    "/var/log/pods",
    "/var/lib/kubelet",
    "/var/lib/cni",
    "/etc/cni",
    "/opt/cni",
    "/opt/containerd",
];

/// Which of the places outside its folder where a node may write exist now.
pub fn outside_paths_present() -> Vec<&'static str> {
    OUTSIDE_PATHS
        .iter()
        .copied()
        .filter(|p| Path::new(p).exists())
        .collect()
}

/// Sysctls the node's components set (the CNI bridge turns on forwarding,
/// the kubelet sets its kernel defaults, kube-proxy conntrack): recorded
/// before the start and restored by the teardown.
const SYSCTLS: &[&str] = &[
    "net/ipv4/ip_forward",
    "net/ipv6/conf/all/forwarding",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "net/ipv4/conf/all/route_localnet",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/netfilter/nf_conntrack_max",
    "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
];

/// Prefixes of the iptables chains and ipsets that node components make:
/// kube-proxy and kube-router (`KUBE-`), the CNI plugins (`CNI-`), ours.
const CHAIN_PREFIXES: &[&str] = &["KUBE-", "CNI-", "PAYSAGA-"];
const IPSET_PREFIXES: &[&str] = &["KUBE-", "kube-router"];

/// The machine-wide lock: one node at a time. Released when dropped, or by
/// the kernel when the process holding it dies.
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

impl Lock {
    /// Takes the lock, or says who holds it.
    pub fn take() -> Result<Lock> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(LOCK_FILE)
            .with_context(|| format!("opening {LOCK_FILE} (the node needs root)"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = Record::read()
                    .ok()
                    .flatten()
                    .map(|r| format!("pid {} ({}), folder {}", r.owner_pid, r.owner, r.folder))
                    .unwrap_or_else(|| "a process that left no record".into());
                bail!(
                    "a paysaga node already runs on this machine, held by {holder}; only one may \
                     run at a time (it owns 10.200.0.1, cni0 and the node's iptables rules). Stop it \
                     (Ctrl-C on make cluster, or let its test finish) and try again"
                );
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("locking {LOCK_FILE}"));
            }
        }
        Ok(Lock { _file: file })
    }
}

/// What the machine looked like before a node started, kept in a file so a
/// later start can restore it when this one's owner was killed.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub owner_pid: u32,
    pub owner: String,
    /// The node's folder (its components' state and logs).
    pub folder: String,
    /// Sysctl values before the start.
    pub sysctls: BTreeMap<String, String>,
    /// Which of [`OUTSIDE_PATHS`] existed before the start.
    pub preexisting: Vec<String>,
}

impl Record {
    /// The machine as it is now, for a node about to start in `folder`.
    pub fn capture(folder: &Path) -> Record {
        let sysctls = SYSCTLS
            .iter()
            .filter_map(|s| Some((s.to_string(), read_sysctl(s)?)))
            .collect();
        let preexisting = OUTSIDE_PATHS
            .iter()
            .filter(|p| Path::new(p).exists())
            .map(|p| p.to_string())
            .collect();
        Record {
            owner_pid: std::process::id(),
            owner: std::env::args().collect::<Vec<_>>().join(" "),
            folder: folder.display().to_string(),
            sysctls,
            preexisting,
        }
    }

    pub fn write(&self) -> Result<()> {
        let doc = serde_json::json!({
            "ownerPid": self.owner_pid,
            "owner": self.owner,
            "folder": self.folder,
            "sysctls": self.sysctls,
            "preexisting": self.preexisting,
        });
        let tmp = format!("{RECORD_FILE}.tmp");
        let mut f = File::create(&tmp).with_context(|| format!("writing {tmp}"))?;
        f.write_all(serde_json::to_string_pretty(&doc)?.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, RECORD_FILE)?;
        Ok(())
    }

    /// The record a node left, if any.
    pub fn read() -> Result<Option<Record>> {
        let text = match std::fs::read_to_string(RECORD_FILE) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).context(RECORD_FILE),
        };
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("reading {RECORD_FILE}"))?;
        let strings = |key: &str| -> Vec<String> {
            v[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| Some(s.as_str()?.to_string()))
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(Some(Record {
            owner_pid: v["ownerPid"].as_u64().unwrap_or(0) as u32,
            owner: v["owner"].as_str().unwrap_or_default().to_string(),
            folder: v["folder"].as_str().unwrap_or_default().to_string(),
            sysctls: v["sysctls"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default(),
            preexisting: strings("preexisting"),
        }))
    }

    fn remove() -> Result<()> {
        match std::fs::remove_file(RECORD_FILE) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).context(RECORD_FILE),
            _ => Ok(()),
        }
    }
}

/// Undoes everything a node did: stops its processes and containers, unmounts
/// what it mounted, removes its network (bridge, address, iptables rules and
/// ipsets), restores the sysctls it changed, removes what it wrote outside
/// its folder and its cgroups. Idempotent; a step that fails does not stop the
/// others, and the errors come back together. Returns what it found to undo.
pub fn teardown(record: &Record) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let mut errors = Vec::new();
    let mut step = |what: &str, r: Result<Vec<String>>| match r {
        Ok(items) => done.extend(items.into_iter().map(|i| format!("{what}: {i}"))),
        Err(e) => errors.push(format!("{what}: {e:#}")),
    };
    let folder = PathBuf::from(&record.folder);
    step("killed", kill_node_processes(&folder));
    step("unmounted", unmount_under(&mount_roots(&folder)));
    step("network", remove_network());
    step("iptables", sweep_iptables());
    step("ipsets", sweep_ipsets());
    step("sysctls", restore_sysctls(&record.sysctls));
    step("removed", remove_outside_paths(&record.preexisting));
    step("cgroups", remove_pod_cgroups());
    if errors.is_empty() {
        Record::remove()?;
        Ok(done)
    } else {
        bail!("tearing the node down failed:\n  {}", errors.join("\n  "))
    }
}

/// What a node left that a teardown should have removed. Empty on a clean
/// machine.
pub fn leftovers(folder: &Path) -> Vec<String> {
    let mut found = Vec::new();
    if Path::new(RECORD_FILE).exists() {
        found.push(format!("{RECORD_FILE} (a node's record)"));
    }
    for pid in node_processes(folder) {
        found.push(format!(
            "process {pid}: {}",
            cmdline(pid).unwrap_or_default()
        ));
    }
    for m in mounts_under(&mount_roots(folder)) {
        found.push(format!("mount {m}"));
    }
    if link_exists(BRIDGE) {
        found.push(format!("link {BRIDGE}"));
    }
    if node_ip_on_lo() {
        found.push(format!("address {NODE_IP} on lo"));
    }
    for (bin, table, chain) in our_chains() {
        found.push(format!("{bin} -t {table} chain {chain}"));
    }
    for set in our_ipsets() {
        found.push(format!("ipset {set}"));
    }
    if Path::new(RUN_DIR).exists() {
        found.push(RUN_DIR.to_string());
    }
    for dir in pod_cgroups() {
        found.push(format!("cgroup {}", dir.display()));
    }
    found
}

/// Puts [`NODE_IP`] on `lo` and turns on what the node's network needs:
/// forwarding (pod → ClusterIP → pod) and bridged traffic through iptables
/// (so kube-proxy and the NetworkPolicy enforcer see pod-to-pod packets on
/// `cni0`). Nothing a pod sends may leave the machine: no masquerade is set
/// up anywhere, and forwarding out of the bridge to any other link is dropped.
pub fn prepare_network() -> Result<()> {
    if !node_ip_on_lo() {
        sh(
            "ip",
            &["addr", "add", &format!("{NODE_IP}/32"), "dev", "lo"],
        )?;
    }
    write_sysctl("net/ipv4/ip_forward", "1")?;
    write_sysctl("net/bridge/bridge-nf-call-iptables", "1")?;
    // In mangle, which is traversed before filter: kube-router's and
    // kube-proxy's filter rules ACCEPT what they allow, and would otherwise
    // decide before this drop is reached.
    for bin in ["iptables", "ip6tables"] {
        let chain = "PAYSAGA-NODE-FORWARD";
        sh(bin, &["-w", "-t", "mangle", "-N", chain])?;
        sh(
            bin,
            &[
                "-w", "-t", "mangle", "-A", chain, "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP",
            ],
        )?;
        sh(
            bin,
            &["-w", "-t", "mangle", "-I", "FORWARD", "1", "-j", chain],
        )?;
    }
    Ok(())
}

fn mount_roots(folder: &Path) -> Vec<PathBuf> {
    let mut roots = vec![PathBuf::from(RUN_DIR), PathBuf::from("/run/containerd")];
    if !folder.as_os_str().is_empty() {
        roots.push(folder.to_path_buf());
    }
    roots
}

/// Processes of the node: anything whose command line names its folder or
/// [`RUN_DIR`] (its components, containerd's shims), and everything in the
/// pods' cgroups (the containers).
fn node_processes(folder: &Path) -> Vec<u32> {
    let me = std::process::id();
    let marks: Vec<String> = [folder.display().to_string(), RUN_DIR.to_string()]
        .into_iter()
        .filter(|m| !m.is_empty())
        .collect();
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| cmdline(pid).is_some_and(|c| marks.iter().any(|m| c.contains(m.as_str()))))
        .collect();
    for dir in pod_cgroups() {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        String::from_utf8_lossy(&raw)
            .split('\0')
            .collect::<Vec<_>>()
            .join(" ")
            .trim()
            .to_string(),
    )
    .filter(|s| !s.is_empty())
}

fn kill_node_processes(folder: &Path) -> Result<Vec<String>> {
    let mut killed = Vec::new();
    // Killed processes may leave children (a shim's container) that show up
    // only once their parent is gone: a few rounds.
    for _ in 0..20 {
        let pids = node_processes(folder);
        if pids.is_empty() {
            return Ok(killed);
        }
        for pid in &pids {
            killed.push(format!("{pid} {}", cmdline(*pid).unwrap_or_default()));
        }
        let _ = Command::new("kill")
            .arg("-KILL")
            .args(pids.iter().map(|p| p.to_string()))
            .output();
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let left = node_processes(folder);
    if left.is_empty() {
        Ok(killed)
    } else {
        bail!("processes survive SIGKILL: {left:?}")
    }
}

/// Mount points at or below any of `roots`, deepest first. Mount points in
/// mountinfo escape spaces and the like as octal (`\040`).
fn mounts_under(roots: &[PathBuf]) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<String> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_octal)
        .filter(|p| roots.iter().any(|r| Path::new(p).starts_with(r)))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    points
}

fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn unmount_under(roots: &[PathBuf]) -> Result<Vec<String>> {
    let mut done = Vec::new();
    // Unmounting a parent can reveal nothing new, but a mount propagated
    // twice shows twice: repeat until none is left.
    for _ in 0..10 {
        let points = mounts_under(roots);
        if points.is_empty() {
            return Ok(done);
        }
        for p in points {
            if Command::new("umount")
                .args(["-l", &p])
                .output()
                .is_ok_and(|o| o.status.success())
            {
                done.push(p);
            }
        }
    }
    let left = mounts_under(roots);
    if left.is_empty() {
        Ok(done)
    } else {
        bail!("still mounted: {left:?}")
    }
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn node_ip_on_lo() -> bool {
    sh("ip", &["-o", "-4", "addr", "show", "dev", "lo"])
        .is_ok_and(|out| out.contains(&format!(" {NODE_IP}/")))
}

fn remove_network() -> Result<Vec<String>> {
    let mut done = Vec::new();
    if link_exists(BRIDGE) {
        sh("ip", &["link", "delete", BRIDGE])?;
        done.push(BRIDGE.to_string());
    }
    if node_ip_on_lo() {
        sh(
            "ip",
            &["addr", "delete", &format!("{NODE_IP}/32"), "dev", "lo"],
        )?;
        done.push(format!("{NODE_IP} on lo"));
    }
    Ok(done)
}

fn is_ours(name: &str) -> bool {
    CHAIN_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// `(binary, table, chain)` of every chain of ours.
fn our_chains() -> Vec<(&'static str, &'static str, String)> {
    let mut found = Vec::new();
    for bin in ["iptables", "ip6tables"] {
        for table in ["filter", "nat", "mangle", "raw"] {
            let Ok(rules) = sh(bin, &["-w", "-t", table, "-S"]) else {
                continue;
            };
            for line in rules.lines() {
                if let Some(chain) = line.strip_prefix("-N ")
                    && is_ours(chain.trim())
                {
                    found.push((bin, table, chain.trim().to_string()));
                }
            }
        }
    }
    found
}

/// Removes the rules that jump to chains of ours from every other chain, then
/// flushes and deletes our chains.
fn sweep_iptables() -> Result<Vec<String>> {
    let mut done = Vec::new();
    for bin in ["iptables", "ip6tables"] {
        for table in ["filter", "nat", "mangle", "raw"] {
            let Ok(rules) = sh(bin, &["-w", "-t", table, "-S"]) else {
                continue;
            };
            let mut ours = Vec::new();
            for line in rules.lines() {
                let words = split_rule(line);
                match words.first().map(String::as_str) {
                    Some("-N") if words.len() == 2 && is_ours(&words[1]) => {
                        ours.push(words[1].clone())
                    }
                    Some("-A") if words.len() > 2 && !is_ours(&words[1]) => {
                        let target = words
                            .windows(2)
                            .find(|w| w[0] == "-j" || w[0] == "-g")
                            .map(|w| w[1].clone());
                        if target.as_deref().is_some_and(is_ours) {
                            let mut args = vec!["-w".to_string(), "-t".into(), table.into()];
                            args.push("-D".into());
                            args.extend(words[1..].iter().cloned());
                            let args: Vec<&str> = args.iter().map(String::as_str).collect();
                            sh(bin, &args)?;
                            done.push(format!("{bin} -t {table} {line}"));
                        }
                    }
                    _ => {}
                }
            }
            for chain in &ours {
                sh(bin, &["-w", "-t", table, "-F", chain])?;
            }
            for chain in &ours {
                sh(bin, &["-w", "-t", table, "-X", chain])?;
                done.push(format!("{bin} -t {table} chain {chain}"));
            }
        }
    }
    Ok(done)
}

/// Splits an `iptables -S` line into words; comments come double-quoted.
fn split_rule(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ' ' if !quoted => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

fn our_ipsets() -> Vec<String> {
    sh("ipset", &["list", "-n"])
        .map(|out| {
            out.lines()
                .filter(|n| IPSET_PREFIXES.iter().any(|p| n.starts_with(p)))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn sweep_ipsets() -> Result<Vec<String>> {
    let sets = our_ipsets();
    // A list:set refers to others: flush them all before destroying any.
    for s in &sets {
        sh("ipset", &["flush", s])?;
    }
    for s in &sets {
        sh("ipset", &["destroy", s])?;
    }
    Ok(sets)
}

fn read_sysctl(name: &str) -> Option<String> {
    std::fs::read_to_string(Path::new("/proc/sys").join(name))
        .ok()
        .map(|v| v.trim().to_string())
}

fn write_sysctl(name: &str, value: &str) -> Result<()> {
    std::fs::write(Path::new("/proc/sys").join(name), value)
        .with_context(|| format!("setting sysctl {name} = {value}"))
}

fn restore_sysctls(before: &BTreeMap<String, String>) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for (name, value) in before {
        if read_sysctl(name).as_deref() != Some(value.as_str()) {
            write_sysctl(name, value)?;
            done.push(format!("{name} = {value}"));
        }
    }
    Ok(done)
}

fn remove_outside_paths(preexisting: &[String]) -> Result<Vec<String>> {
    let mut done = Vec::new();
    for p in OUTSIDE_PATHS.iter().chain([&RUN_DIR]) {
        let path = Path::new(p);
        if !path.exists() || preexisting.iter().any(|q| q == p) {
            continue;
        }
        std::fs::remove_dir_all(path).with_context(|| format!("removing {p}"))?;
        done.push(p.to_string());
    }
    Ok(done)
}

/// The pods' cgroups (the kubelet's `kubepods` tree under every v1
/// hierarchy, or under the v2 root), deepest first.
fn pod_cgroups() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup/kubepods")];
    for e in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        roots.push(e.path().join("kubepods"));
    }
    for root in roots {
        collect_dirs(&root, &mut dirs);
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    dirs.dedup();
    dirs
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    out.push(dir.to_path_buf());
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_dirs(&e.path(), out);
        }
    }
}

fn remove_pod_cgroups() -> Result<Vec<String>> {
    let mut done = Vec::new();
    for dir in pod_cgroups() {
        // A cgroup directory is removed with rmdir, never recursively: its
        // files are the kernel's.
        std::fs::remove_dir(&dir).with_context(|| format!("rmdir {}", dir.display()))?;
        done.push(dir.display().to_string());
    }
    Ok(done)
}

/// Runs a system command; its stdout, or an error with its output.
pub(crate) fn sh(program: &str, args: &[&str]) -> Result<String> {
    crate::process::run(Command::new(program).args(args))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iptables_rules_split_like_the_shell_would() {
        assert_eq!(
            split_rule(
                r#"-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES"#
            ),
            [
                "-A",
                "OUTPUT",
                "-m",
                "comment",
                "--comment",
                "kubernetes service portals",
                "-j",
                "KUBE-SERVICES"
            ]
        );
        assert_eq!(
            split_rule("-N CNI-HOSTPORT-DNAT"),
            ["-N", "CNI-HOSTPORT-DNAT"]
        );
    }

    #[test]
    fn mount_points_are_unescaped() {
        assert_eq!(unescape_octal(r"/run/a\040b"), "/run/a b");
        assert_eq!(unescape_octal("/plain"), "/plain");
    }

    #[test]
    fn only_our_chains_count_as_ours() {
        assert!(is_ours("KUBE-SERVICES"));
        assert!(is_ours("CNI-HOSTPORT-DNAT"));
        assert!(is_ours("PAYSAGA-NODE-FORWARD"));
        assert!(!is_ours("DOCKER"));
        assert!(!is_ours("FORWARD"));
    }
}
