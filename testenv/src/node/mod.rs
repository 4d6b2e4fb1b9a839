//! A real one-node Kubernetes cluster on this machine: etcd → kube-apiserver
//! → kube-controller-manager → kube-scheduler → containerd → kubelet →
//! kube-proxy → kube-router (NetworkPolicies) → CoreDNS → Traefik (ingress),
//! with images built here and no registry. The chart's pods really run.
//!
//! The node is machine-wide (see [`host`]): one at a time, behind a lock, and
//! [`NodeEnv`] undoes everything it did when dropped — on success, on a
//! panic, on Ctrl-C in `make cluster` — or, when its owner was killed, at the
//! next start. Its folder keeps the components' logs.
//!
//! Addresses: the node, its API server (port 6443) and the ingress (HTTPS on
//! port 443, port 80 redirecting to it) are on [`host::NODE_IP`]; pods get [`host::POD_CIDR`], Services
//! [`host::SERVICE_CIDR`], DNS is [`host::DNS_SERVICE_IP`].

pub mod config;
pub mod dns;
pub mod host;
pub mod images;
pub mod provisioner;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use self::config::{NODE_NAME, containerd_socket};
use self::host::{
    API_SERVICE_IP, CLUSTER_CIDR, DNS_SERVICE_IP, Lock, NODE_IP, Record, SERVICE_CIDR,
};
use self::images::Built;
use self::provisioner::Provisioner;
use crate::kube::{ApiServerOptions, KubeEnv, TokenUser};
use crate::process::{Proc, run};
use crate::tool;

/// The API server's port on [`NODE_IP`].
pub const API_PORT: u16 = 6443;

/// The running node.
pub struct NodeEnv {
    /// Where its components keep state and logs.
    pub folder: PathBuf,
    /// An administrator's kubeconfig (`<folder>/kubeconfig`).
    pub kubeconfig: PathBuf,
    /// The ingress controller's plain-HTTP address, `http://10.200.0.1`:
    /// it only redirects to HTTPS (`https://<name>` resolved to the same
    /// address; see [`crate::cluster::Release::ingress_tls`]).
    pub ingress_url: String,
    /// The images every node has: the toolbox (busybox and curl) for probes.
    pub toolbox: Built,
    /// How long each part of the start took.
    pub timings: Vec<(&'static str, Duration)>,
    // Stopped in reverse order of start by Drop.
    procs: Vec<Proc>,
    provisioner: Option<Provisioner>,
    kube: Option<KubeEnv>,
    record: Record,
    _lock: Lock,
}

impl NodeEnv {
    /// Starts a node in `folder` (emptied first), waits until the Node is
    /// Ready, DNS answers and the ingress controller serves.
    pub fn start(folder: &Path) -> Result<NodeEnv> {
        let t0 = Instant::now();
        if run(Command::new("id").arg("-u"))?.trim() != "0" {
            bail!(
                "the one-node cluster needs root: it runs containerd and the kubelet and sets up \
                 the pods' network (run make cluster / make test as root)"
            );
        }
        let lock = Lock::take()?;
        clean_after_previous_owner()?;
        if folder.exists() {
            std::fs::remove_dir_all(folder)
                .with_context(|| format!("emptying {}", folder.display()))?;
        }
        std::fs::create_dir_all(folder)?;
        let folder = std::fs::canonicalize(folder)?;
        let record = Record::capture(&folder);
        record.write()?;
        let mut node = NodeEnv {
            kubeconfig: folder.join("kubeconfig"),
            ingress_url: format!("http://{NODE_IP}"),
            toolbox: Built {
                reference: String::new(),
                archive: PathBuf::new(),
            },
            folder,
            timings: Vec::new(),
            procs: Vec::new(),
            provisioner: None,
            kube: None,
            record,
            _lock: lock,
        };
        // From here on, an error drops `node`, which tears down what was started.
        node.timings.push(("lock and clean", t0.elapsed()));
        node.boot()?;
        Ok(node)
    }

    fn boot(&mut self) -> Result<()> {
        let mut t = Instant::now();
        let mut lap = |timings: &mut Vec<_>, what| {
            timings.push((what, t.elapsed()));
            t = Instant::now();
        };
        host::prepare_network()?;

        let users = Users::new();
        let kube = KubeEnv::start_with(
            &self.folder.join("control-plane"),
            &ApiServerOptions {
                address: NODE_IP.into(),
                port: Some(API_PORT),
                service_cidr: SERVICE_CIDR.into(),
                extra_sans: vec![
                    API_SERVICE_IP.into(),
                    "kubernetes".into(),
                    "kubernetes.default".into(),
                    "kubernetes.default.svc.cluster.local".into(),
                ],
                node: true,
                tokens: users.all(),
            },
        )?;
        std::fs::copy(&kube.admin_kubeconfig, &self.kubeconfig)?;
        let kc = |name: &str, user: &TokenUser| kube.token_kubeconfig(name, user);
        let (kcm_kc, sched_kc, kubelet_kc, proxy_kc, router_kc) = (
            kc("controller-manager", &users.controller_manager)?,
            kc("scheduler", &users.scheduler)?,
            kc("kubelet", &users.kubelet)?,
            kc("kube-proxy", &users.kube_proxy)?,
            kc("kube-router", &users.kube_router)?,
        );
        let pki = kube.pki_dir();
        self.kube = Some(kube);
        self.apply_manifest("node.yaml")?;
        lap(&mut self.timings, "etcd and kube-apiserver");

        let logs = self.folder.join("logs");
        std::fs::create_dir_all(&logs)?;
        let kcm = kcm_kc.display().to_string();
        self.spawn(
            "kube-controller-manager",
            &[
                format!("--kubeconfig={kcm}"),
                format!("--authentication-kubeconfig={kcm}"),
                format!("--authorization-kubeconfig={kcm}"),
                "--bind-address=127.0.0.1".into(),
                "--leader-elect=false".into(),
                "--use-service-account-credentials=true".into(),
                format!(
                    "--service-account-private-key-file={}",
                    pki.join("sa.key").display()
                ),
                format!("--root-ca-file={}", pki.join("ca.crt").display()),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                format!("--cluster-cidr={CLUSTER_CIDR}"),
                "--allocate-node-cidrs=true".into(),
                "--node-cidr-mask-size=24".into(),
                "--cluster-name=paysaga".into(),
                "--v=1".into(),
            ],
        )?;
        let sched = sched_kc.display().to_string();
        self.spawn(
            "kube-scheduler",
            &[
                format!("--kubeconfig={sched}"),
                format!("--authentication-kubeconfig={sched}"),
                format!("--authorization-kubeconfig={sched}"),
                "--bind-address=127.0.0.1".into(),
                "--leader-elect=false".into(),
                "--v=1".into(),
            ],
        )?;

        // containerd, with the sandbox image and the node's pods' images in it.
        let pause = images::pause()?.build()?;
        let coredns = images::coredns().build()?;
        let traefik = images::traefik().build()?;
        self.toolbox = images::toolbox().build()?;
        lap(&mut self.timings, "images (built or cached)");
        let ctd_conf = self.folder.join("containerd.toml");
        std::fs::create_dir_all(self.folder.join("cni/net.d"))?;
        std::fs::write(
            self.folder.join("cni/net.d/10-paysaga.conflist"),
            config::cni(&self.folder),
        )?;
        std::fs::write(
            &ctd_conf,
            config::containerd(&self.folder, &cni_bin_dir(), &pause.reference),
        )?;
        let socket = containerd_socket();
        self.spawn("containerd", &[format!("--config={}", ctd_conf.display())])?;
        let ctr_probe = socket.clone();
        self.last_proc().wait_ready(Duration::from_secs(30), || {
            Command::new(tool("ctr"))
                .args(["--address", &ctr_probe, "version"])
                .output()
                .is_ok_and(|o| o.status.success())
        })?;
        images::import(&socket, &[&pause, &coredns, &traefik, &self.toolbox])?;
        lap(&mut self.timings, "containerd and image import");

        std::fs::write(self.folder.join("resolv.conf"), config::RESOLV_CONF)?;
        let kubelet_conf = self.folder.join("kubelet.yaml");
        std::fs::write(
            &kubelet_conf,
            config::kubelet(&self.folder, &pki.join("ca.crt")),
        )?;
        self.spawn(
            "kubelet",
            &[
                format!("--config={}", kubelet_conf.display()),
                format!("--kubeconfig={}", kubelet_kc.display()),
                format!("--root-dir={}", self.folder.join("kubelet").display()),
                format!("--node-ip={NODE_IP}"),
                format!("--hostname-override={NODE_NAME}"),
                "--v=1".into(),
            ],
        )?;
        let proxy_conf = self.folder.join("kube-proxy.yaml");
        std::fs::write(&proxy_conf, config::kube_proxy(&proxy_kc))?;
        self.spawn(
            "kube-proxy",
            &[format!("--config={}", proxy_conf.display())],
        )?;
        let kubeconfig = self.kubeconfig.clone();
        let kubelet = self
            .procs
            .iter_mut()
            .find(|p| p.name() == "kubelet")
            .expect("the kubelet was just started");
        kubelet.wait_ready(Duration::from_secs(120), || {
            node_ready(&kubeconfig).unwrap_or(false)
        })?;
        lap(&mut self.timings, "kubelet: Node Ready");
        self.kube_proxy_healthy()?;
        lap(&mut self.timings, "kube-proxy: healthy");

        self.spawn(
            "kube-router",
            &[
                format!("--kubeconfig={}", router_kc.display()),
                "--run-firewall=true".into(),
                "--run-router=false".into(),
                "--run-service-proxy=false".into(),
                "--enable-cni=false".into(),
                format!("--hostname-override={NODE_NAME}"),
                "--health-port=20244".into(),
                "--metrics-port=0".into(),
                "--v=1".into(),
            ],
        )?;
        self.provisioner = Some(Provisioner::start(
            &self.kubeconfig,
            &self.folder.join("volumes"),
        )?);

        self.apply_manifest_with(
            "coredns.yaml",
            &[
                ("COREDNS_IMAGE", coredns.reference.as_str()),
                ("DNS_SERVICE_IP", DNS_SERVICE_IP),
            ],
        )?;
        self.apply_manifest_with(
            "traefik.yaml",
            &[
                ("TRAEFIK_IMAGE", traefik.reference.as_str()),
                ("NODE_IP", NODE_IP),
            ],
        )?;
        self.kubectl_ok(&[
            "-n",
            "kube-system",
            "rollout",
            "status",
            "deployment/coredns",
            "--timeout=120s",
        ])?;
        dns::wait_until_answers(
            DNS_SERVICE_IP,
            "kubernetes.default.svc.cluster.local",
            API_SERVICE_IP.parse()?,
            Duration::from_secs(60),
        )?;
        lap(&mut self.timings, "CoreDNS answering");
        self.kubectl_ok(&[
            "-n",
            "ingress",
            "rollout",
            "status",
            "deployment/traefik",
            "--timeout=120s",
        ])?;
        lap(&mut self.timings, "Traefik ready");
        Ok(())
    }

    /// Starts a node component from `.tools/bin`, logging to the folder.
    fn spawn(&mut self, name: &str, args: &[String]) -> Result<()> {
        let path = format!(
            "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            crate::tool("").display()
        );
        let proc = Proc::spawn_with_env(
            name,
            &self.folder.join("logs"),
            "TERM",
            tool(name),
            args,
            &[("PATH", std::ffi::OsStr::new(&path))],
        )?;
        self.procs.push(proc);
        Ok(())
    }

    /// Waits until kube-proxy reports healthy (its rules written for the
    /// Node). kube-proxy 1.35.4 sometimes panics as it starts (a nil pointer
    /// in `NodeConfig.handleChangeNode` when the Node arrives early; seen on
    /// this machine, the node then had no Service routing at all): a crashed
    /// kube-proxy is started again, as the kubelet restarts a DaemonSet's
    /// crashed pod, up to three times.
    fn kube_proxy_healthy(&mut self) -> Result<()> {
        let proxy = self
            .procs
            .iter_mut()
            .find(|p| p.name() == "kube-proxy")
            .expect("kube-proxy was started");
        let mut attempt = 1;
        loop {
            let healthy = proxy.wait_ready(Duration::from_secs(90), || {
                crate::http_get_ok("127.0.0.1", 10256, "/healthz")
            });
            match healthy {
                Ok(()) => return Ok(()),
                Err(e) if attempt < 3 && proxy.pid().is_none() => {
                    eprintln!(
                        "paysaga cluster: kube-proxy exited as it started; starting it again: {e:#}"
                    );
                    proxy.respawn()?;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn last_proc(&mut self) -> &mut Proc {
        self.procs.last_mut().expect("a component was started")
    }

    /// The control plane (etcd + kube-apiserver) of the node.
    pub fn kube(&self) -> &KubeEnv {
        self.kube
            .as_ref()
            .expect("the node's API server runs while the node does")
    }

    /// `kubectl` as the administrator.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(tool("kubectl"));
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// Runs `kubectl args...`; stdout, or an error with its output.
    pub fn kubectl_ok(&self, args: &[&str]) -> Result<String> {
        run(self.kubectl().args(args))
    }

    /// `helm` against the node.
    pub fn helm(&self) -> Command {
        let mut cmd = Command::new(tool("helm"));
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// `ctr` on the node's containerd, in the kubelet's namespace.
    pub fn ctr(&self) -> Command {
        let mut cmd = Command::new(tool("ctr"));
        cmd.args(["--address", &containerd_socket(), "--namespace", "k8s.io"]);
        cmd
    }

    /// Imports built images into the node.
    pub fn import(&self, images: &[&Built]) -> Result<()> {
        images::import(&containerd_socket(), images)
    }

    /// Where a component's log is (`kubelet`, `containerd`, …).
    pub fn log(&self, name: &str) -> PathBuf {
        self.folder.join("logs").join(format!("{name}.log"))
    }

    fn apply_manifest(&self, file: &str) -> Result<()> {
        self.apply_manifest_with(file, &[])
    }

    /// Applies `testenv/cluster/<file>` with `${NAME}`s replaced.
    fn apply_manifest_with(&self, file: &str, vars: &[(&str, &str)]) -> Result<()> {
        let path = crate::workspace_root().join("testenv/cluster").join(file);
        let mut text =
            std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
        for (name, value) in vars {
            text = text.replace(&format!("${{{name}}}"), value);
        }
        if let Some(start) = text.find("${") {
            let rest = &text[start..];
            bail!(
                "{file}: {} is not set",
                &rest[..rest.find('}').map_or(rest.len(), |e| e + 1)]
            );
        }
        let out = self
            .kube()
            .kubectl_with_input(&["apply", "--server-side", "-f", "-"], &text);
        if !out.status.success() {
            bail!("applying {file}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }
}

impl Drop for NodeEnv {
    fn drop(&mut self) {
        self.provisioner.take();
        while let Some(mut p) = self.procs.pop() {
            p.stop();
        }
        self.kube.take();
        match host::teardown(&self.record) {
            Ok(_) => {}
            Err(e) => eprintln!("paysaga node: {e:#}"),
        }
    }
}

/// A node whose owner died left its record: undo what it did. With no
/// record, anything of a node's still here (a record lost, a node of an older
/// version) is swept as well.
fn clean_after_previous_owner() -> Result<()> {
    let record = match Record::read()? {
        Some(r) => {
            eprintln!(
                "paysaga node: the node of pid {} ({}) was not torn down; cleaning up after it",
                r.owner_pid, r.owner
            );
            r
        }
        None if host::leftovers(Path::new("")).is_empty() => return Ok(()),
        None => {
            eprintln!("paysaga node: a node's leftovers are here without a record; cleaning up");
            Record::capture(Path::new(""))
        }
    };
    let done = host::teardown(&record)?;
    for item in &done {
        eprintln!("  {item}");
    }
    let left = host::leftovers(Path::new(&record.folder));
    if !left.is_empty() {
        bail!(
            "after cleaning up, a previous node's parts are still here:\n  {}",
            left.join("\n  ")
        );
    }
    Ok(())
}

/// The installed CNI plugins (`make tools` links them at `.tools/cni`).
fn cni_bin_dir() -> PathBuf {
    let dir = tool("").join("../cni");
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

fn node_ready(kubeconfig: &Path) -> Result<bool> {
    let out = Command::new(tool("kubectl"))
        .env("KUBECONFIG", kubeconfig)
        .args([
            "get",
            "node",
            NODE_NAME,
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#,
        ])
        .output()?;
    Ok(out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "True")
}

/// The identities of the node's components (static tokens).
struct Users {
    controller_manager: TokenUser,
    scheduler: TokenUser,
    kubelet: TokenUser,
    kube_proxy: TokenUser,
    kube_router: TokenUser,
}

impl Users {
    fn new() -> Users {
        Users {
            controller_manager: TokenUser::new("system:kube-controller-manager", &[]),
            scheduler: TokenUser::new("system:kube-scheduler", &[]),
            kubelet: TokenUser::new(&format!("system:node:{NODE_NAME}"), &["system:nodes"]),
            kube_proxy: TokenUser::new("system:kube-proxy", &[]),
            kube_router: TokenUser::new("paysaga:kube-router", &[]),
        }
    }

    fn all(&self) -> Vec<TokenUser> {
        vec![
            self.controller_manager.clone(),
            self.scheduler.clone(),
            self.kubelet.clone(),
            self.kube_proxy.clone(),
            self.kube_router.clone(),
        ]
    }
}
