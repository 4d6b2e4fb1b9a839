//! A real Kubernetes control plane: etcd + kube-apiserver with RBAC on.
//!
//! No controllers run (no scheduler, no garbage collector, no namespace
//! finalisation): the API server is the part paysaga talks to, and it is real.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::process::{Proc, run};
use crate::{free_port, random_hex, tool};

pub struct KubeEnv {
    dir: PathBuf,
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    /// A kubeconfig for an administrator (group `system:masters`).
    pub admin_kubeconfig: PathBuf,
    ca_file: PathBuf,
    // Field order is drop order: the API server stops before etcd.
    apiserver: Proc,
    etcd: Proc,
}

impl KubeEnv {
    /// Starts etcd and kube-apiserver on free loopback ports, keeping their
    /// state and logs under `dir`.
    pub fn start(dir: &Path) -> Result<KubeEnv> {
        std::fs::create_dir_all(dir)?;
        let pki = dir.join("pki");
        std::fs::create_dir_all(&pki)?;
        make_pki(&pki)?;

        let etcd_port = free_port()?;
        let peer_port = free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = Proc::spawn(
            "etcd",
            dir,
            "TERM",
            tool("etcd"),
            &[
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
        )?;
        etcd.wait_ready(Duration::from_secs(30), || {
            crate::http_get_ok("127.0.0.1", etcd_port, "/health")
        })?;

        let port = free_port()?;
        let server = format!("https://127.0.0.1:{port}");
        let admin_token = random_hex(16);
        std::fs::write(
            pki.join("tokens.csv"),
            format!("{admin_token},paysaga-admin,paysaga-admin,\"system:masters\"\n"),
        )?;
        let p = |f: &str| pki.join(f).display().to_string();
        let mut apiserver = Proc::spawn(
            "kube-apiserver",
            dir,
            "TERM",
            tool("kube-apiserver"),
            &[
                format!("--etcd-servers={etcd_url}"),
                format!("--secure-port={port}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                "--endpoint-reconciler-type=none".into(),
                format!("--cert-dir={}", dir.join("certs").display()),
                format!("--tls-cert-file={}", p("apiserver.crt")),
                format!("--tls-private-key-file={}", p("apiserver.key")),
                format!("--client-ca-file={}", p("ca.crt")),
                format!("--token-auth-file={}", p("tokens.csv")),
                "--authorization-mode=RBAC".into(),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                format!("--service-account-issuer={server}"),
                format!("--service-account-key-file={}", p("sa.pub")),
                format!("--service-account-signing-key-file={}", p("sa.key")),
                "--allow-privileged=true".into(),
                "--disable-admission-plugins=ServiceAccount".into(),
                "--v=1".into(),
            ],
        )?;

        let ca_file = pki.join("ca.crt");
        let admin_kubeconfig = dir.join("admin.kubeconfig");
        write_kubeconfig(
            &admin_kubeconfig,
            &server,
            &ca_file,
            "paysaga-admin",
            &admin_token,
            "default",
        )?;
        let probe = admin_kubeconfig.clone();
        apiserver.wait_ready(Duration::from_secs(90), || {
            Command::new(tool("kubectl"))
                .arg("--kubeconfig")
                .arg(&probe)
                .args(["get", "--raw", "/readyz"])
                .output()
                .is_ok_and(|o| o.status.success())
        })?;
        Ok(KubeEnv {
            dir: dir.to_path_buf(),
            server,
            admin_kubeconfig,
            ca_file,
            apiserver,
            etcd,
        })
    }

    /// `kubectl` as the administrator.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(tool("kubectl"));
        cmd.env("KUBECONFIG", &self.admin_kubeconfig);
        cmd
    }

    /// Runs `kubectl args...` as the administrator; returns stdout, or fails with
    /// stdout and stderr.
    pub fn kubectl_ok(&self, args: &[&str]) -> Result<String> {
        run(self.kubectl().args(args))
    }

    /// Runs `kubectl args...` as the administrator with `input` on stdin
    /// (for `-f -`); returns its output whatever the exit status.
    pub fn kubectl_with_input(&self, args: &[&str], input: &str) -> std::process::Output {
        use std::io::Write;
        use std::process::Stdio;
        let mut child = self
            .kubectl()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting kubectl");
        child
            .stdin
            .take()
            .expect("kubectl's stdin")
            .write_all(input.as_bytes())
            .expect("writing to kubectl");
        child.wait_with_output().expect("waiting for kubectl")
    }

    /// A kube-rs client for the administrator.
    pub async fn client(&self) -> Result<kube::Client> {
        client_for(&self.admin_kubeconfig).await
    }

    /// Creates a fresh namespace `<prefix>-<unique>` for one test.
    pub fn namespace(&self, prefix: &str) -> Result<crate::TestNamespace> {
        let name = crate::unique_name(prefix);
        self.kubectl_ok(&["create", "namespace", &name])?;
        Ok(crate::TestNamespace { name })
    }

    /// Applies the checked-in CRDs (`crds/`) and waits until they are served.
    pub fn apply_crds(&self) -> Result<()> {
        let crds = crate::workspace_root().join("crds");
        self.kubectl_ok(&["apply", "--server-side", "-f", &crds.display().to_string()])?;
        self.kubectl_ok(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/payments.paysaga.dev",
        ])?;
        Ok(())
    }

    /// A kubeconfig holding a real token of ServiceAccount `namespace/name`
    /// (created if missing), for least-privilege tests: what that account may
    /// do is exactly what RBAC grants it.
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        let exists = self
            .kubectl()
            .args(["get", "serviceaccount", name, "-n", namespace])
            .output()?
            .status
            .success();
        if !exists {
            self.kubectl_ok(&["create", "serviceaccount", name, "-n", namespace])?;
        }
        let token =
            self.kubectl_ok(&["create", "token", name, "-n", namespace, "--duration=24h"])?;
        let path = self.dir.join(format!("sa-{namespace}-{name}.kubeconfig"));
        let user = format!("system:serviceaccount:{namespace}:{name}");
        write_kubeconfig(
            &path,
            &self.server,
            &self.ca_file,
            &user,
            token.trim(),
            namespace,
        )?;
        Ok(path)
    }

    /// The process ids of kube-apiserver and etcd (for CPU and memory readings).
    pub fn pids(&self) -> (Option<u32>, Option<u32>) {
        (self.apiserver.pid(), self.etcd.pid())
    }

    /// The log files of etcd and the API server.
    pub fn logs(&self) -> [&Path; 2] {
        [self.etcd.log_path(), self.apiserver.log_path()]
    }
}

/// A kube-rs client from a kubeconfig file.
pub async fn client_for(kubeconfig: &Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading {}", kubeconfig.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    Ok(kube::Client::try_from(config)?)
}

fn write_kubeconfig(
    path: &Path,
    server: &str,
    ca: &Path,
    user: &str,
    token: &str,
    namespace: &str,
) -> Result<()> {
    // JSON is valid YAML; serde_json escapes every value correctly.
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "paysaga", "cluster": {"server": server, "certificate-authority": ca}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "paysaga", "user": user, "namespace": namespace}}],
        "current-context": user,
    });
    std::fs::write(path, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// A throwaway CA, the API server's serving certificate (valid for 127.0.0.1
/// and localhost) and the service-account signing key pair, made with openssl.
fn make_pki(pki: &Path) -> Result<()> {
    let ossl = |args: &[&str]| run(Command::new("openssl").current_dir(pki).args(args));
    ossl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "30",
        "-subj",
        "/CN=paysaga-testenv-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ])?;
    ossl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=kube-apiserver",
        "-keyout",
        "apiserver.key",
        "-out",
        "apiserver.csr",
    ])?;
    std::fs::write(
        pki.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n",
    )?;
    ossl(&[
        "x509",
        "-req",
        "-in",
        "apiserver.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "30",
        "-extfile",
        "san.ext",
        "-out",
        "apiserver.crt",
    ])?;
    ossl(&["genrsa", "-out", "sa.key", "2048"])?;
    ossl(&["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"])?;
    Ok(())
}
