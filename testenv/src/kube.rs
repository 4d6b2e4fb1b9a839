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

/// How to start the API server.
#[derive(Debug, Clone)]
pub struct ApiServerOptions {
    /// The address it binds to and advertises.
    pub address: String,
    /// Its port; a free one when `None`.
    pub port: Option<u16>,
    /// The Services' ClusterIP range.
    pub service_cidr: String,
    /// More names and addresses its serving certificate is valid for.
    pub extra_sans: Vec<String>,
    /// Configure it for a cluster whose pods run (see [`KubeEnv::start_with`]).
    pub node: bool,
    /// Users authenticated by bearer token besides the administrator.
    pub tokens: Vec<TokenUser>,
}

impl Default for ApiServerOptions {
    fn default() -> Self {
        ApiServerOptions {
            address: "127.0.0.1".into(),
            port: None,
            service_cidr: "10.0.0.0/24".into(),
            extra_sans: Vec::new(),
            node: false,
            tokens: Vec::new(),
        }
    }
}

/// A new API key `name` for the HTTP API serving `namespace`, made as the
/// README says (`paysaga-operator api-key create` with `kubeconfig`), its
/// user bound to each of `cluster_roles` there with `kubectl`.
pub fn create_api_key(
    kubeconfig: &Path,
    kubectl: &dyn Fn(&[&str]) -> Result<String>,
    namespace: &str,
    name: &str,
    cluster_roles: &[&str],
) -> Result<String> {
    let key = run(Command::new(crate::services::binary("paysaga-operator")?)
        .args(["api-key", "create", name, "-n", namespace])
        .env("KUBECONFIG", kubeconfig))
    .context("paysaga-operator api-key create")?;
    let user = format!("paysaga:apikey:{namespace}:{name}");
    for role in cluster_roles {
        kubectl(&[
            "create",
            "rolebinding",
            &format!("{name}-{role}"),
            "-n",
            namespace,
            &format!("--clusterrole={role}"),
            &format!("--user={user}"),
        ])?;
    }
    Ok(key.trim().to_string())
}

/// A user of the API server's static token file.
#[derive(Debug, Clone)]
pub struct TokenUser {
    pub token: String,
    pub user: String,
    pub groups: Vec<String>,
}

impl TokenUser {
    /// A user with a fresh random token.
    pub fn new(user: &str, groups: &[&str]) -> TokenUser {
        TokenUser {
            token: random_hex(16),
            user: user.to_string(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }
}

impl KubeEnv {
    /// Starts etcd and kube-apiserver on free loopback ports, keeping their
    /// state and logs under `dir`.
    pub fn start(dir: &Path) -> Result<KubeEnv> {
        KubeEnv::start_with(dir, &ApiServerOptions::default())
    }

    /// [`KubeEnv::start`] as `opts` says (the one-node cluster's API server).
    pub fn start_with(dir: &Path, opts: &ApiServerOptions) -> Result<KubeEnv> {
        std::fs::create_dir_all(dir)?;
        let pki = dir.join("pki");
        std::fs::create_dir_all(&pki)?;
        make_pki(&pki, opts)?;

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

        let port = match opts.port {
            Some(p) => p,
            None => free_port()?,
        };
        let address = &opts.address;
        let server = format!("https://{address}:{port}");
        let admin_token = random_hex(16);
        let mut tokens = format!("{admin_token},paysaga-admin,paysaga-admin,\"system:masters\"\n");
        for t in &opts.tokens {
            tokens.push_str(&format!(
                "{},{},{},\"{}\"\n",
                t.token,
                t.user,
                t.user,
                t.groups.join(",")
            ));
        }
        std::fs::write(pki.join("tokens.csv"), tokens)?;
        let p = |f: &str| pki.join(f).display().to_string();
        let mut args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--secure-port={port}"),
            format!("--bind-address={address}"),
            format!("--advertise-address={address}"),
            format!("--cert-dir={}", dir.join("certs").display()),
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            format!("--token-auth-file={}", p("tokens.csv")),
            format!("--service-cluster-ip-range={}", opts.service_cidr),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            "--allow-privileged=true".into(),
            "--v=1".into(),
        ];
        if opts.node {
            // A cluster whose pods run: they get ServiceAccount tokens
            // (admission on), reach this server through the `kubernetes`
            // Service (its endpoint kept by the server), and the kubelet is
            // authorised as a node.
            args.extend([
                "--authorization-mode=Node,RBAC".into(),
                "--enable-admission-plugins=NodeRestriction".into(),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!(
                    "--kubelet-client-certificate={}",
                    p("apiserver-kubelet-client.crt")
                ),
                format!("--kubelet-client-key={}", p("apiserver-kubelet-client.key")),
                "--kubelet-preferred-address-types=InternalIP".into(),
            ]);
        } else {
            args.extend([
                "--authorization-mode=RBAC".into(),
                "--endpoint-reconciler-type=none".into(),
                format!("--service-account-issuer={server}"),
                "--disable-admission-plugins=ServiceAccount".into(),
            ]);
        }
        let mut apiserver =
            Proc::spawn("kube-apiserver", dir, "TERM", tool("kube-apiserver"), &args)?;

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
            "crd/idempotencykeys.paysaga.dev",
            "crd/refunds.paysaga.dev",
            "crd/recurringpayments.paysaga.dev",
            "crd/webhookendpoints.paysaga.dev",
        ])?;
        Ok(())
    }

    /// Applies the ClusterRoles the chart ships for the HTTP API's callers
    /// (`charts/paysaga/files/client-roles.yaml`: paysaga-client,
    /// paysaga-viewer, paysaga-payload-reader, paysaga-any-payer).
    pub fn apply_client_roles(&self) -> Result<()> {
        let roles = crate::workspace_root().join("charts/paysaga/files/client-roles.yaml");
        self.kubectl_ok(&["apply", "--server-side", "-f", &roles.display().to_string()])?;
        Ok(())
    }

    /// A new API key for the HTTP API serving `namespace`, made as the README
    /// says (`paysaga-operator api-key create`), its user bound to each of
    /// `cluster_roles` in `namespace`.
    pub fn api_key(&self, namespace: &str, name: &str, cluster_roles: &[&str]) -> Result<String> {
        self.apply_client_roles()?;
        create_api_key(
            &self.admin_kubeconfig,
            &|args| self.kubectl_ok(args),
            namespace,
            name,
            cluster_roles,
        )
    }

    /// Creates ServiceAccount `namespace/name` unless it exists.
    fn ensure_service_account(&self, namespace: &str, name: &str) -> Result<()> {
        let exists = self
            .kubectl()
            .args(["get", "serviceaccount", name, "-n", namespace])
            .output()?
            .status
            .success();
        if !exists {
            self.kubectl_ok(&["create", "serviceaccount", name, "-n", namespace])?;
        }
        Ok(())
    }

    /// A token of ServiceAccount `namespace/name` (created if missing) issued
    /// for `audience`, as a projected token would be.
    pub fn service_account_token(
        &self,
        namespace: &str,
        name: &str,
        audience: &str,
    ) -> Result<String> {
        self.ensure_service_account(namespace, name)?;
        let token = self.kubectl_ok(&[
            "create",
            "token",
            name,
            "-n",
            namespace,
            "--duration=1h",
            &format!("--audience={audience}"),
        ])?;
        Ok(token.trim().to_string())
    }

    /// A kubeconfig holding a real token of ServiceAccount `namespace/name`
    /// (created if missing), for least-privilege tests: what that account may
    /// do is exactly what RBAC grants it.
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> Result<PathBuf> {
        self.ensure_service_account(namespace, name)?;
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

    /// A kubeconfig at `<dir>/<name>.kubeconfig` for a token user given at start.
    pub fn token_kubeconfig(&self, name: &str, user: &TokenUser) -> Result<PathBuf> {
        let path = self.dir.join(format!("{name}.kubeconfig"));
        write_kubeconfig(
            &path,
            &self.server,
            &self.ca_file,
            &user.user,
            &user.token,
            "default",
        )?;
        Ok(path)
    }

    /// The API server's certificates and keys (`ca.crt`, `sa.key`, …).
    pub fn pki_dir(&self) -> PathBuf {
        self.dir.join("pki")
    }

    /// The cluster's CA certificate (it signs the API server's certificate
    /// and client certificates; its key is beside it).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
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

/// A throwaway CA, the API server's serving certificate (valid for its
/// address, localhost and `opts.extra_sans`) and the service-account signing
/// key pair, made with openssl; for a node, also the API server's client
/// certificate for the kubelet.
fn make_pki(pki: &Path, opts: &ApiServerOptions) -> Result<()> {
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
    let mut sans = vec![
        "IP:127.0.0.1".to_string(),
        "DNS:localhost".into(),
        "DNS:kubernetes.default.svc".into(),
    ];
    if opts.address != "127.0.0.1" {
        sans.push(format!("IP:{}", opts.address));
    }
    for san in &opts.extra_sans {
        let kind = if san.parse::<std::net::IpAddr>().is_ok() {
            "IP"
        } else {
            "DNS"
        };
        sans.push(format!("{kind}:{san}"));
    }
    std::fs::write(
        pki.join("san.ext"),
        format!("subjectAltName={}\n", sans.join(",")),
    )?;
    issue_cert(pki, "apiserver", "/CN=kube-apiserver", Some("san.ext"))?;
    ossl(&["genrsa", "-out", "sa.key", "2048"])?;
    ossl(&["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"])?;
    if opts.node {
        issue_cert(
            pki,
            "apiserver-kubelet-client",
            "/O=system:masters/CN=kube-apiserver-kubelet-client",
            None,
        )?;
    }
    Ok(())
}

/// `<name>.key` and `<name>.crt` signed by the CA in `pki`, for `subject`,
/// with the extensions in `extfile` if any.
fn issue_cert(pki: &Path, name: &str, subject: &str, extfile: Option<&str>) -> Result<()> {
    let ossl = |args: &[&str]| run(Command::new("openssl").current_dir(pki).args(args));
    let (key, csr, crt) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
    );
    ossl(&[
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", &key, "-out", &csr,
    ])?;
    let mut sign = vec![
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "30",
        "-out",
        &crt,
    ];
    if let Some(ext) = extfile {
        sign.extend(["-extfile", ext]);
    }
    ossl(&sign)?;
    Ok(())
}
