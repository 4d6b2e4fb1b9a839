//! Container images without a registry: each is a recipe of host files (a
//! binary brings the shared libraries `ldd` names), built from scratch with
//! buildah into an OCI archive, cached by what went in, and imported into the
//! node's containerd.
//!
//! | image | from |
//! |---|---|
//! | [`paysaga`] | the workspace's binaries (stripped), their libraries, CA certificates; non-root, as the `Dockerfile`'s distroless image |
//! | [`temporal`] | the pinned Temporal CLI (a static binary), as `temporalio/temporal` runs it |
//! | [`postgresql`] | Debian's PostgreSQL and an entrypoint that keeps the official image's environment contract |
//! | [`toolbox`] | busybox and curl: `helm test`, probes from inside the cluster |
//! | [`pause`], [`coredns`], [`traefik`] | the node's own pods |

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::process::run;
use crate::tool;

/// The non-root user of every image but PostgreSQL's (distroless' `nonroot`).
pub const NONROOT: u32 = 65532;
/// PostgreSQL's user, as in the official Alpine image the chart was written for.
pub const POSTGRES_UID: u32 = 70;

/// An image to build: what goes in and how it runs.
#[derive(Debug, Clone, Default)]
pub struct Image {
    pub name: String,
    /// `(host file, path in the image)`; binaries bring their libraries.
    files: Vec<(PathBuf, String)>,
    /// `(host directory, path in the image)`, copied whole.
    trees: Vec<(PathBuf, String)>,
    /// `(path in the image, contents, mode)`.
    texts: Vec<(String, String, u32)>,
    /// `(link in the image, target)`.
    links: Vec<(String, String)>,
    /// Strip debug information from the binaries (the workspace's debug build).
    strip: bool,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    user: String,
    env: Vec<String>,
}

impl Image {
    fn new(name: &str) -> Image {
        Image {
            name: name.into(),
            user: format!("{NONROOT}:{NONROOT}"),
            ..Default::default()
        }
        .text("/etc/passwd", &passwd(), 0o644)
        .text("/etc/group", &group(), 0o644)
    }

    fn file(mut self, host: impl Into<PathBuf>, at: &str) -> Image {
        self.files.push((host.into(), at.into()));
        self
    }

    fn tree(mut self, host: impl Into<PathBuf>, at: &str) -> Image {
        self.trees.push((host.into(), at.into()));
        self
    }

    fn text(mut self, at: &str, contents: &str, mode: u32) -> Image {
        self.texts.push((at.into(), contents.into(), mode));
        self
    }

    fn link(mut self, at: &str, target: &str) -> Image {
        self.links.push((at.into(), target.into()));
        self
    }

    fn busybox(mut self, applets: &[&str]) -> Image {
        self = self.file("/bin/busybox", "/bin/busybox");
        for a in applets {
            self = self.link(&format!("/bin/{a}"), "busybox");
        }
        self
    }

    fn ca_certificates(self) -> Image {
        self.file(
            "/etc/ssl/certs/ca-certificates.crt",
            "/etc/ssl/certs/ca-certificates.crt",
        )
    }

    fn entrypoint(mut self, args: &[&str]) -> Image {
        self.entrypoint = args.iter().map(|s| s.to_string()).collect();
        self
    }

    fn cmd(mut self, args: &[&str]) -> Image {
        self.cmd = args.iter().map(|s| s.to_string()).collect();
        self
    }

    fn user(mut self, uid: u32) -> Image {
        self.user = format!("{uid}:{uid}");
        self
    }

    fn env(mut self, kv: &str) -> Image {
        self.env.push(kv.into());
        self
    }

    /// Every host file that goes in, with its place in the image: the files,
    /// the libraries they load, and the trees' contents.
    fn inputs(&self) -> Result<Vec<(PathBuf, String)>> {
        let mut all = Vec::new();
        let mut libs = BTreeSet::new();
        for (host, at) in &self.files {
            if !host.is_file() {
                bail!("image {}: {} is missing", self.name, host.display());
            }
            all.push((host.clone(), at.clone()));
            libs.extend(shared_libraries(host)?);
        }
        for (host, at) in &self.trees {
            for file in walk(host)? {
                let rel = file.strip_prefix(host).expect("walked below its root");
                let dest = format!("{at}/{}", rel.display());
                if file.extension().is_some_and(|x| x == "so") {
                    libs.extend(shared_libraries(&file)?);
                }
                all.push((file, dest));
            }
        }
        for lib in libs {
            let at = lib.display().to_string();
            if !all.iter().any(|(_, a)| *a == at) {
                all.push((lib, at));
            }
        }
        Ok(all)
    }

    /// What the image is made of, as a key: the recipe, and each input's
    /// path, size and modification time. A changed binary makes a new image.
    fn key(&self, inputs: &[(PathBuf, String)]) -> Result<String> {
        let mut h = std::hash::DefaultHasher::new();
        format!(
            "{:?}{:?}{:?}{:?}{:?}{}{:?}{}",
            self.texts,
            self.links,
            self.entrypoint,
            self.cmd,
            self.env,
            self.user,
            self.files,
            self.strip
        )
        .hash(&mut h);
        for (host, at) in inputs {
            let meta = std::fs::metadata(host).with_context(|| host.display().to_string())?;
            let mtime = meta
                .modified()?
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            (host, at, meta.len(), mtime.as_nanos()).hash(&mut h);
        }
        Ok(format!("{:016x}", h.finish()))
    }

    /// Builds the image (or finds it built): its reference and OCI archive.
    pub fn build(&self) -> Result<Built> {
        let inputs = self.inputs()?;
        let tag = self.key(&inputs)?;
        let reference = format!("localhost/{}:{tag}", self.name);
        let dir = cache_dir()?.join("images");
        std::fs::create_dir_all(&dir)?;
        let archive = dir.join(format!("{}-{tag}.oci.tar", self.name));
        if archive.exists() {
            return Ok(Built { reference, archive });
        }
        let scratch = tempdir(&dir, &format!(".build-{}", self.name))?;
        let result = self.build_into(&scratch, &inputs, &reference, &archive);
        let _ = std::fs::remove_dir_all(&scratch);
        result?;
        Ok(Built { reference, archive })
    }

    fn build_into(
        &self,
        scratch: &Path,
        inputs: &[(PathBuf, String)],
        reference: &str,
        archive: &Path,
    ) -> Result<()> {
        let rootfs = scratch.join("rootfs");
        for (host, at) in inputs {
            let dest = rootfs.join(at.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().expect("a path in the image has a parent"))?;
            let is_binary = self.files.iter().any(|(h, _)| h == host);
            if self.strip && is_binary && is_elf(host) {
                run(Command::new("strip")
                    .arg("--strip-debug")
                    .arg("-o")
                    .arg(&dest)
                    .arg(host))?;
            } else {
                std::fs::copy(host, &dest)
                    .with_context(|| format!("copying {} into {}", host.display(), self.name))?;
            }
        }
        for (at, contents, mode) in &self.texts {
            let dest = rootfs.join(at.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().expect("a path in the image has a parent"))?;
            std::fs::write(&dest, contents)?;
            set_mode(&dest, *mode)?;
        }
        for (at, target) in &self.links {
            let dest = rootfs.join(at.trim_start_matches('/'));
            std::fs::create_dir_all(dest.parent().expect("a path in the image has a parent"))?;
            std::os::unix::fs::symlink(target, &dest)?;
        }
        // Where a read-only root still needs a directory to mount over.
        for d in ["tmp", "data", "var/run/postgresql", "var/lib/postgresql"] {
            std::fs::create_dir_all(rootfs.join(d))?;
        }
        set_mode(&rootfs.join("tmp"), 0o1777)?;

        let partial = archive.with_extension("partial");
        let container = buildah(&["from", "scratch"])?.trim().to_string();
        let built = (|| {
            buildah(&["copy", &container, &format!("{}/", rootfs.display()), "/"])?;
            let mut config = vec![
                "config".to_string(),
                "--user".into(),
                self.user.clone(),
                "--entrypoint".into(),
                serde_json::to_string(&self.entrypoint)?,
            ];
            if !self.cmd.is_empty() {
                config.push("--cmd".into());
                config.push(serde_json::to_string(&self.cmd)?);
            }
            for kv in &self.env {
                config.push("--env".into());
                config.push(kv.clone());
            }
            config.push(container.clone());
            let config: Vec<&str> = config.iter().map(String::as_str).collect();
            buildah(&config)?;
            buildah(&[
                "commit",
                "--quiet",
                &container,
                &format!("oci-archive:{}:{reference}", partial.display()),
            ])
        })();
        let _ = buildah(&["rm", &container]);
        built?;
        std::fs::rename(&partial, archive)?;
        Ok(())
    }
}

/// A built image: what pods call it, and the archive to import.
#[derive(Debug, Clone)]
pub struct Built {
    pub reference: String,
    pub archive: PathBuf,
}

/// Imports built images into the node's containerd (namespace `k8s.io`,
/// where the kubelet looks).
pub fn import(socket: &str, images: &[&Built]) -> Result<()> {
    for image in images {
        run(Command::new(tool("ctr"))
            .args([
                "--address",
                socket,
                "--namespace",
                "k8s.io",
                "images",
                "import",
            ])
            .arg(&image.archive))
        .with_context(|| format!("importing {}", image.reference))?;
    }
    Ok(())
}

/// paysaga: the workspace's three binaries as the `Dockerfile` has them, in
/// `/usr/local/bin`, with what they load, CA certificates, non-root.
pub fn paysaga(bin_dir: &Path) -> Image {
    let mut image = Image::new("paysaga").ca_certificates();
    for b in ["paysaga-operator", "paysaga-worker", "paysaga-sim"] {
        image = image.file(bin_dir.join(b), &format!("/usr/local/bin/{b}"));
    }
    image.strip = true;
    image.env("PATH=/usr/local/bin:/usr/bin:/bin")
}

/// Temporal: the pinned CLI's dev server; the chart passes `server start-dev …`.
pub fn temporal() -> Image {
    Image::new("temporal")
        .file(resolve(&tool("temporal")), "/usr/local/bin/temporal")
        .entrypoint(&["/usr/local/bin/temporal"])
        .env("HOME=/tmp")
}

/// PostgreSQL from Debian's packages. The entrypoint keeps the contract of
/// the official image that the chart relies on: `POSTGRES_USER`,
/// `POSTGRES_PASSWORD`, `POSTGRES_DB`, `PGDATA`; `pg_isready` on the PATH.
pub fn postgresql(major: &str) -> Image {
    let base = PathBuf::from(format!("/usr/lib/postgresql/{major}"));
    let mut image = Image::new("postgresql")
        .busybox(&["sh", "cat", "mkdir", "chmod", "rm", "ls", "id", "sed"])
        .tree(
            format!("/usr/share/postgresql/{major}"),
            &format!("/usr/share/postgresql/{major}"),
        )
        .tree("/usr/share/zoneinfo", "/usr/share/zoneinfo")
        .text(
            "/usr/local/bin/postgres-entrypoint",
            include_str!("../../images/postgres-entrypoint.sh"),
            0o755,
        )
        .entrypoint(&["/usr/local/bin/postgres-entrypoint"])
        .user(POSTGRES_UID)
        .env(&format!("PATH={}/bin:/usr/local/bin:/bin", base.display()))
        .env("PGDATA=/var/lib/postgresql/data")
        .env("TZ=Etc/UTC");
    for b in ["postgres", "initdb", "pg_ctl", "pg_isready", "psql"] {
        image = image.file(
            base.join("bin").join(b),
            &format!("{}/bin/{b}", base.display()),
        );
    }
    // The server's loadable modules, but the JIT (it would bring all of LLVM).
    for e in std::fs::read_dir(base.join("lib"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if p.is_file() && name.ends_with(".so") && !name.starts_with("llvmjit") {
            image = image.file(p, &format!("{}/lib/{name}", base.display()));
        }
    }
    image
}

/// busybox and curl: what `helm test` and in-cluster probes run.
pub fn toolbox() -> Image {
    Image::new("toolbox")
        .busybox(&[
            "sh", "cat", "echo", "sed", "seq", "sleep", "nc", "nslookup", "grep", "head", "tr",
            "env", "printf", "id", "ls", "timeout", "wget",
        ])
        .file("/usr/bin/curl", "/usr/bin/curl")
        .ca_certificates()
        .cmd(&["sh"])
        .env("PATH=/usr/bin:/bin")
}

/// The pod sandbox: a static `pause` that sleeps, exits on TERM/INT and reaps
/// children, built from the project's source with gcc.
pub fn pause() -> Result<Image> {
    let src = crate::workspace_root().join("testenv/images/pause.c");
    let code = std::fs::read(&src).with_context(|| src.display().to_string())?;
    let mut h = std::hash::DefaultHasher::new();
    code.hash(&mut h);
    let bin = cache_dir()?.join(format!("images/pause-{:016x}", h.finish()));
    if !bin.exists() {
        std::fs::create_dir_all(bin.parent().expect("in the cache"))?;
        let partial = bin.with_extension("partial");
        run(Command::new("gcc")
            .args(["-static", "-Os", "-o"])
            .arg(&partial)
            .arg(&src))
        .context("compiling pause.c (gcc and libc6-dev, from make tools)")?;
        std::fs::rename(&partial, &bin)?;
    }
    Ok(Image::new("pause")
        .file(bin, "/pause")
        .entrypoint(&["/pause"]))
}

/// CoreDNS, from the Go module `make tools` builds.
pub fn coredns() -> Image {
    Image::new("coredns")
        .file(resolve(&tool("coredns")), "/coredns")
        .entrypoint(&["/coredns"])
}

/// Traefik, the ingress controller, from the Go module `make tools` builds.
pub fn traefik() -> Image {
    Image::new("traefik")
        .file(resolve(&tool("traefik")), "/traefik")
        .ca_certificates()
        .entrypoint(&["/traefik"])
}

fn passwd() -> String {
    format!(
        "root:x:0:0:root:/root:/sbin/nologin\n\
         postgres:x:{POSTGRES_UID}:{POSTGRES_UID}:PostgreSQL:/var/lib/postgresql:/bin/sh\n\
         nonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n"
    )
}

fn group() -> String {
    format!("root:x:0:\npostgres:x:{POSTGRES_UID}:\nnonroot:x:{NONROOT}:\n")
}

/// A tool's real file (`.tools/bin` holds links into the cache).
fn resolve(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

fn is_elf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

/// The shared libraries a binary loads, as `ldd` resolves them (none for a
/// static binary).
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    if !is_elf(binary) {
        return Ok(Vec::new());
    }
    let out = Command::new("ldd").arg(binary).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.trim().split(' ').next().unwrap_or(""),
            None => line.split(' ').next().unwrap_or(""),
        };
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        } else if line.contains("not found") {
            bail!("{}: {line}", binary.display());
        }
    }
    Ok(libs)
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| d.display().to_string())? {
            let e = e?;
            let t = e.file_type()?;
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() || (t.is_symlink() && e.path().is_file()) {
                files.push(e.path());
            }
        }
    }
    files.sort();
    Ok(files)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// The cache outside the clone, as `tools/install.sh` keeps it.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PAYSAGA_CACHE") {
        return Ok(PathBuf::from(dir));
    }
    let base = match std::env::var_os("XDG_CACHE_HOME") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".cache"),
    };
    Ok(base.join("paysaga"))
}

fn tempdir(parent: &Path, prefix: &str) -> Result<PathBuf> {
    let dir = parent.join(format!("{prefix}-{}", crate::random_hex(6)));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// buildah as root with the project's own storage (vfs, under the cache): no
/// daemon, no registry, and nothing in the system's container storage.
fn buildah(args: &[&str]) -> Result<String> {
    let storage = cache_dir()?.join("buildah");
    std::fs::create_dir_all(&storage)?;
    let conf = storage.join("storage.conf");
    std::fs::write(
        &conf,
        format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/storage\"\nrunroot = \"{0}/run\"\n",
            storage.display()
        ),
    )?;
    let policy = storage.join("policy.json");
    std::fs::write(
        &policy,
        r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )?;
    run(Command::new(tool("buildah"))
        .env("CONTAINERS_STORAGE_CONF", &conf)
        .env("CONTAINERS_POLICY_JSON", &policy)
        .env("BUILDAH_ISOLATION", "chroot")
        .args(args))
}
