//! paysaga's chart on the one-node cluster, as users install it: the images
//! built here and imported, `helm install` with values naming them, every
//! pod Ready. `make cluster` and the cluster test tier both go through
//! [`Release::install`].

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::node::NodeEnv;
use crate::node::images::{self, Built};
use crate::process::run;

/// The chart's images, built from this workspace and the pinned tools, and
/// imported into the node.
pub struct ChartImages {
    pub paysaga: Built,
    pub temporal: Built,
    pub postgresql: Built,
    pub toolbox: Built,
}

impl ChartImages {
    /// Builds (or finds cached) and imports them; the paysaga image from
    /// `target/<profile>` (`$PAYSAGA_PROFILE`, debug unless set).
    pub fn build_and_import(node: &NodeEnv) -> Result<ChartImages> {
        let bin = crate::services::binary("paysaga-operator")?;
        let bin_dir = bin.parent().expect("a binary is in a directory");
        let source = crate::workspace_root().join("tools/versions.env");
        let versions = std::fs::read_to_string(&source)?;
        let pg_major = versions
            .lines()
            .find_map(|l| l.strip_prefix("POSTGRES_MAJOR="))
            .context("POSTGRES_MAJOR in tools/versions.env")?;
        let images = ChartImages {
            paysaga: images::paysaga(bin_dir).build()?,
            temporal: images::temporal().build()?,
            postgresql: images::postgresql(pg_major.trim()).build()?,
            toolbox: node.toolbox.clone(),
        };
        node.import(&[&images.paysaga, &images.temporal, &images.postgresql])?;
        Ok(images)
    }

    /// Values that point the chart at these images (never pulled: there is
    /// no registry), and open the accounts the dev stack and k6 use.
    pub fn values(&self) -> String {
        let (repo, tag) = self
            .paysaga
            .reference
            .rsplit_once(':')
            .expect("a reference has a tag");
        format!(
            "# The chart on paysaga's one-node cluster: images built here.\n\
             image:\n  repository: {repo}\n  tag: \"{tag}\"\n  pullPolicy: Never\n\
             temporal:\n  dev:\n    image: {temporal}\n\
             postgresql:\n  internal:\n    image: {postgresql}\n\
             tests:\n  image: {toolbox}\n\
             worker:\n  seedAccounts: \"{accounts}\"\n",
            temporal = self.temporal.reference,
            postgresql = self.postgresql.reference,
            toolbox = self.toolbox.reference,
            accounts = crate::dev::dev_accounts(),
        )
    }
}

/// A Helm release of the chart on the node.
pub struct Release<'a> {
    pub node: &'a NodeEnv,
    pub name: String,
    pub namespace: String,
    /// The values file it was installed with.
    pub values: PathBuf,
}

impl<'a> Release<'a> {
    /// `helm install` with `values` (and `extra` `--set`s), waiting until
    /// every Deployment and StatefulSet is Ready.
    pub fn install(
        node: &'a NodeEnv,
        name: &str,
        namespace: &str,
        values: &str,
        extra: &[&str],
    ) -> Result<Release<'a>> {
        let file = node.folder.join(format!("values-{namespace}-{name}.yaml"));
        std::fs::write(&file, values)?;
        let release = Release {
            node,
            name: name.into(),
            namespace: namespace.into(),
            values: file,
        };
        release.helm_ok(
            &[
                "install",
                name,
                &chart().display().to_string(),
                "--namespace",
                namespace,
                "--create-namespace",
                "--wait",
                "--timeout=10m",
                "-f",
                &release.values.display().to_string(),
            ],
            extra,
        )?;
        Ok(release)
    }

    /// Runs `helm <args> <extra>` against the node; its output.
    pub fn helm_ok(&self, args: &[&str], extra: &[&str]) -> Result<String> {
        run(self.node.helm().args(args).args(extra))
    }

    /// `helm test`, with the test pod's logs.
    pub fn test(&self) -> Result<String> {
        self.helm_ok(
            &[
                "test",
                &self.name,
                "--namespace",
                &self.namespace,
                "--logs",
                "--timeout=5m",
            ],
            &[],
        )
    }

    /// `kubectl -n <namespace> args...`.
    pub fn kubectl_ok(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", self.namespace.as_str()];
        all.extend_from_slice(args);
        self.node.kubectl_ok(&all)
    }

    /// The ledger audit, run by the worker in the cluster against its
    /// PostgreSQL: the report, and whether money is conserved.
    pub fn audit(&self) -> Result<(String, bool)> {
        let out = self
            .node
            .kubectl()
            .args(["-n", &self.namespace, "exec"])
            .arg(format!("deployment/{}-worker", self.name))
            .args(["--", "paysaga-worker", "audit"])
            .output()
            .context("kubectl exec … paysaga-worker audit")?;
        let mut report = String::from_utf8_lossy(&out.stdout).into_owned();
        report.push_str(&String::from_utf8_lossy(&out.stderr));
        Ok((report, out.status.success()))
    }

    /// A new API key for the release's HTTP API, made as the README says
    /// (`paysaga-operator api-key create`), its user bound to each of the
    /// chart's `cluster_roles` (e.g. `paysaga-client`) in the namespace: as
    /// [`crate::kube::KubeEnv::api_key`], on the node.
    pub fn api_key(&self, name: &str, cluster_roles: &[&str]) -> Result<String> {
        crate::kube::create_api_key(
            &self.node.kubeconfig,
            &|args| self.kubectl_ok(args),
            &self.namespace,
            name,
            cluster_roles,
        )
    }

    /// The release's Ingress over HTTPS as the chart serves it by default:
    /// a certificate for `localhost` and `<release>.local` signed by a CA
    /// the chart made (Secret `<release>-ingress-tls`, key `ca.crt`). The CA
    /// and a k6 config resolving the name to the node are written to the
    /// node's folder.
    pub fn ingress_tls(&self) -> Result<IngressTls> {
        let secret = format!("{}-ingress-tls", self.name);
        let json = self.kubectl_ok(&["get", "secret", &secret, "-o", "json"])?;
        let secret: k8s_openapi::api::core::v1::Secret =
            serde_json::from_str(&json).context("reading the ingress' TLS Secret")?;
        let field = |key: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|v| v.0.clone())
                .with_context(|| {
                    format!("the ingress' TLS Secret has no {key}: not the chart's own certificate")
                })
        };
        let (ca, cert) = (field("ca.crt")?, field("tls.crt")?);
        let host = format!("{}.local", self.name);
        let stem = format!("ingress-{}-{}", self.namespace, self.name);
        let ca_file = self.node.folder.join(format!("{stem}-ca.crt"));
        std::fs::write(&ca_file, &ca)?;
        let k6_config = self.node.folder.join(format!("{stem}-k6.json"));
        std::fs::write(
            &k6_config,
            serde_json::json!({ "hosts": { &host: crate::node::host::NODE_IP } }).to_string(),
        )?;
        Ok(IngressTls {
            url: format!("https://{host}"),
            host,
            ca: ca_file,
            k6_config,
            cert_pem: String::from_utf8_lossy(&cert).into_owned(),
        })
    }

    /// A local port forwarded to `service:port` (to steer the simulators
    /// from a test: the path under test never goes through it).
    pub fn port_forward(&self, service: &str, port: u16) -> Result<PortForward> {
        PortForward::start(
            self.node,
            &self.namespace,
            &format!("service/{service}"),
            port,
        )
    }

    /// A local port forwarded to `port` of a pod of `resource` (e.g.
    /// `deployment/<name>`, for a port no Service exposes).
    pub fn port_forward_to(&self, resource: &str, port: u16) -> Result<PortForward> {
        PortForward::start(self.node, &self.namespace, resource, port)
    }
}

/// How a client reaches a release's API over HTTPS through the node's
/// ingress, trusting only the chart's CA ([`Release::ingress_tls`]).
pub struct IngressTls {
    /// `https://<release>.local`.
    pub url: String,
    /// `<release>.local`, which resolves nowhere but here: clients are told
    /// it is the node ([`IngressTls::curl_args`], `k6_config`).
    pub host: String,
    /// The chart's CA certificate (PEM).
    pub ca: PathBuf,
    /// `k6 run --config` file mapping `host` to the node; with
    /// `SSL_CERT_FILE=<ca>`, k6 verifies the ingress against the chart's CA.
    pub k6_config: PathBuf,
    /// The certificate the chart made for the ingress (PEM), to compare
    /// with the one served.
    pub cert_pem: String,
}

impl IngressTls {
    /// curl's `--cacert <ca> --resolve <host>:443:<node>`.
    pub fn curl_args(&self) -> Vec<String> {
        vec![
            "--cacert".into(),
            self.ca.display().to_string(),
            "--resolve".into(),
            format!("{}:443:{}", self.host, crate::node::host::NODE_IP),
        ]
    }
}

/// The chart in this workspace.
pub fn chart() -> PathBuf {
    crate::workspace_root().join("charts/paysaga")
}

/// `kubectl port-forward`, stopped when dropped.
pub struct PortForward {
    child: Child,
    /// `http://127.0.0.1:<local port>`.
    pub url: String,
}

impl PortForward {
    fn start(node: &NodeEnv, namespace: &str, target: &str, port: u16) -> Result<PortForward> {
        let log = node.folder.join(format!(
            "port-forward-{namespace}-{}-{}.log",
            target.replace('/', "-"),
            crate::random_hex(3)
        ));
        let mut child = node
            .kubectl()
            .args(["-n", namespace, "port-forward"])
            .arg(target)
            .arg(format!(":{port}"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(Stdio::null())
            .spawn()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            // "Forwarding from 127.0.0.1:41231 -> 8090"
            if let Some(local) = text
                .lines()
                .find_map(|l| l.strip_prefix("Forwarding from 127.0.0.1:"))
                .and_then(|rest| rest.split_whitespace().next())
            {
                return Ok(PortForward {
                    child,
                    url: format!("http://127.0.0.1:{local}"),
                });
            }
            if let Some(status) = child.try_wait()? {
                bail!("kubectl port-forward to {target} exited ({status}): {text}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("kubectl port-forward to {target} did not start: {text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where `make cluster` keeps its node (git-ignored).
pub fn make_cluster_dir() -> PathBuf {
    crate::workspace_root().join(".cluster")
}

/// Seconds, to one decimal, for what is printed.
pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Whether `path` is below the workspace (for printing it short).
pub fn short(path: &Path) -> String {
    path.strip_prefix(crate::workspace_root())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.display().to_string())
}
