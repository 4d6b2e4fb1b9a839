//! The node's configuration files, as text. No client required: what each
//! component is told, in one place.

use std::path::Path;

use super::host::{BRIDGE, CLUSTER_CIDR, DNS_SERVICE_IP, NODE_IP, POD_CIDR, RUN_DIR};

/// The Node's name.
pub const NODE_NAME: &str = "paysaga-node";

/// containerd's socket, for the kubelet and `ctr`.
pub fn containerd_socket() -> String {
    format!("{RUN_DIR}/containerd.sock")
}

/// containerd: state and sockets under [`RUN_DIR`], images and snapshots in
/// the folder, CNI from the installed plugins and the folder's config, and
/// the two settings without which no pod starts on these machines:
/// `restrict_oom_score_adj` (root here lacks CAP_SYS_RESOURCE, so runc cannot
/// raise a container's oom_score_adj) and a sandbox image that is already
/// here (there is no registry).
pub fn containerd(folder: &Path, cni_bin: &Path, sandbox_image: &str) -> String {
    let f = folder.display();
    format!(
        r#"version = 2
root = "{f}/containerd/root"
state = "{RUN_DIR}/containerd"

[grpc]
  address = "{socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{f}/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_selinux = false
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{f}/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{RUN_DIR}/runc"
        SystemdCgroup = false
"#,
        socket = containerd_socket(),
        cni_bin = cni_bin.display(),
    )
}

/// The pods' network: one bridge, addresses from the node's share of the
/// cluster range, no masquerade (nothing is meant to leave the machine), and
/// host ports (the ingress controller's) through portmap.
pub fn cni(folder: &Path) -> String {
    serde_json::to_string_pretty(&serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "paysaga",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": folder.join("cni/ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    }))
    .expect("a JSON literal serialises")
}

/// The kubelet. cgroup v1 is what these machines have (1.35 refuses it
/// unless told); images can never be pulled again, so image garbage
/// collection never runs; eviction thresholds are low because CI disks can be
/// nearly full and an evicted pod here is a false failure.
pub fn kubelet(folder: &Path, ca: &Path) -> String {
    let f = folder.display();
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {NODE_IP}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization: {{mode: Webhook}}
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
containerRuntimeEndpoint: unix://{socket}
clusterDomain: cluster.local
clusterDNS: [{DNS_SERVICE_IP}]
resolvConf: {f}/resolv.conf
podLogsDir: {f}/pod-logs
rotateCertificates: false
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
"#,
        ca = ca.display(),
        socket = containerd_socket(),
    )
}

/// What pods with `dnsPolicy: Default` (CoreDNS) get as resolv.conf: no
/// upstream, since nothing a pod sends may leave the machine.
pub const RESOLV_CONF: &str = "# paysaga node: no upstream resolver; names outside cluster.local do not resolve\noptions ndots:1\n";

/// kube-proxy in iptables mode (the tool family kube-router and portmap use
/// too, so one sweep undoes them all); node ports only on the node's
/// address; conntrack sysctls left as they are.
pub fn kube_proxy(kubeconfig: &Path) -> String {
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {{kubeconfig: {kubeconfig}}}
mode: iptables
clusterCIDR: {CLUSTER_CIDR}
bindAddress: {NODE_IP}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
hostnameOverride: {NODE_NAME}
nodePortAddresses: ["{NODE_IP}/32"]
iptables: {{localhostNodePorts: false}}
conntrack:
  maxPerCore: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
"#,
        kubeconfig = kubeconfig.display(),
    )
}
