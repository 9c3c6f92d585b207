//! The operator image that `make image` builds (image/build.sh: the Dockerfile's final stage over
//! a statically linked binary, built by buildah, written as an OCI archive; built here when
//! missing or stale). Its configuration is what `deploy/` expects; its files are the binary at
//! `/app/operator` (the platform's CronJobs run `./operator session-trigger` from WORKDIR /app)
//! and at the entrypoint; the binary needs no loader. And it runs: the binary unpacked from the
//! image's layer, started as the image says (entrypoint, working directory, user) inside the
//! image's root filesystem, with only what a kubelet adds to a container (the ServiceAccount's
//! token, CA and namespace, /etc/hosts, /etc/resolv.conf, /proc) and the Deployment's args and
//! env, takes a session from Pending through Creating and Running to Completed on the local
//! control plane, as the shipped ServiceAccount, reaching the API server over TLS by a
//! `*.svc.cluster.local` name that it resolves through DNS (a small DNS server of the test's on
//! a loopback address stands in for the cluster's), as `session-trigger` will reach the backend.
//! Containers cannot run on this machine (README "Deploying"), hence a chroot of the unpacked
//! image instead of `podman run`; it needs root, as `make image` does.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use agentic_crds::Phase;
use serde_json::Value;

use support::operator::{create, install_crds, session, wait_for_phase};
use support::process::{free_port, http_get, metric_sum};
use support::rbac::{self, deploy_dir, render};
use support::{ClusterInfo, TestNamespace, wait_until};

const LIMIT: Duration = Duration::from_secs(90);
/// The in-cluster name of the API server, one of its certificate's names (cluster/up.sh).
const API_SERVER_NAME: &str = "kubernetes.default.svc.cluster.local";
/// Where a kubelet mounts the ServiceAccount's credentials.
const SERVICE_ACCOUNT_DIR: &str = "var/run/secrets/kubernetes.io/serviceaccount";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs image/build.sh once per test binary (quick when the image is up to date) and returns
/// the OCI archive.
fn image_archive() -> PathBuf {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    ARCHIVE
        .get_or_init(|| {
            let output = Command::new(repo().join("image/build.sh"))
                .current_dir(repo())
                .stdin(Stdio::null())
                .output()
                .expect("running image/build.sh");
            assert!(
                output.status.success(),
                "image/build.sh failed:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            repo().join("target/image/agentic-operator.oci.tar")
        })
        .clone()
}

/// Runs a command; panics with its output unless it succeeds; returns stdout.
fn run(command: &mut Command) -> String {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The OCI archive unpacked: its image configuration and its layers applied in order to a root
/// filesystem. Removed when dropped unless the test failed.
struct UnpackedImage {
    dir: PathBuf,
    config: Value,
    rootfs: PathBuf,
}

impl UnpackedImage {
    fn new(archive: &Path, purpose: &str) -> Self {
        let dir = repo()
            .join("target/image")
            .join(format!("test-{purpose}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let layout = dir.join("oci");
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(&layout).expect("creating the layout directory");
        std::fs::create_dir_all(&rootfs).expect("creating the rootfs directory");
        run(Command::new("tar")
            .arg("-xf")
            .arg(archive)
            .arg("-C")
            .arg(&layout));
        let blob = |digest: &Value| {
            let digest = digest.as_str().expect("a digest");
            let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
            layout.join("blobs/sha256").join(hex)
        };
        let json = |path: PathBuf| -> Value {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            serde_json::from_str(&text).expect("OCI JSON")
        };
        let index = json(layout.join("index.json"));
        let manifests = index["manifests"].as_array().expect("index.manifests");
        assert_eq!(manifests.len(), 1, "one image in the archive: {index}");
        let manifest = json(blob(&manifests[0]["digest"]));
        let config = json(blob(&manifest["config"]["digest"]));
        for layer in manifest["layers"].as_array().expect("manifest.layers") {
            run(Command::new("tar")
                .arg("-xf")
                .arg(blob(&layer["digest"]))
                .arg("-C")
                .arg(&rootfs));
        }
        UnpackedImage {
            dir,
            config,
            rootfs,
        }
    }

    /// `config.<field>` of the image configuration.
    fn field(&self, field: &str) -> &Value {
        &self.config["config"][field]
    }

    /// `config.User` as (uid, gid).
    fn user(&self) -> (u32, u32) {
        let user = self.field("User").as_str().expect("config.User");
        let (uid, gid) = user.split_once(':').expect("config.User is uid:gid");
        (
            uid.parse().expect("a numeric uid"),
            gid.parse().expect("a numeric gid"),
        )
    }

    /// `unshare` running `program` as the image would: root filesystem, working directory and
    /// user of the image, /proc mounted, an empty environment.
    fn command(&self, program: &[&str]) -> Command {
        std::fs::create_dir_all(self.rootfs.join("proc")).expect("creating the /proc mount point");
        let (uid, gid) = self.user();
        let mut command = Command::new("unshare");
        command
            .arg("--mount-proc")
            .arg(format!("--root={}", self.rootfs.display()))
            .arg(format!(
                "--wd={}",
                self.field("WorkingDir").as_str().expect("WorkingDir")
            ))
            .arg(format!("--setuid={uid}"))
            .arg(format!("--setgid={gid}"))
            .arg("--")
            .args(program)
            .env_clear();
        command
    }
}

impl Drop for UnpackedImage {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("unpacked image kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

/// The operator's Pod template in `deploy/base`.
fn pod_template(cluster: &ClusterInfo) -> Value {
    let base = render(cluster, &deploy_dir().join("base"));
    find(&base, "Deployment", "agentic-operator")["spec"]["template"].clone()
}

/// Whether an ELF file asks for a program interpreter (a dynamic loader).
fn has_interpreter(elf: &[u8]) -> bool {
    assert!(
        elf.starts_with(b"\x7fELF\x02\x01"),
        "a 64-bit little-endian ELF file"
    );
    let u16_at = |at: usize| usize::from(u16::from_le_bytes([elf[at], elf[at + 1]]));
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&elf[0x20..0x28]);
    let program_headers = usize::try_from(u64::from_le_bytes(offset)).expect("offset fits");
    let (entry_size, entries) = (u16_at(0x36), u16_at(0x38));
    const PT_INTERP: u32 = 3;
    (0..entries).any(|i| {
        let at = program_headers + i * entry_size;
        u32::from_le_bytes([elf[at], elf[at + 1], elf[at + 2], elf[at + 3]]) == PT_INTERP
    })
}

/// Every path under `root` (relative), with `/` appended to directories and ` -> target` to
/// symlinks.
fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("reading the rootfs") {
            let path = entry.expect("a directory entry").path();
            let relative = path
                .strip_prefix(root)
                .expect("under root")
                .display()
                .to_string();
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).expect("a symlink target");
                out.push(format!("{relative} -> {}", target.display()));
            } else if meta.is_dir() {
                out.push(format!("{relative}/"));
                pending.push(path);
            } else {
                out.push(relative);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_image_configuration_and_files_are_what_deploy_expects() {
    use std::os::unix::fs::PermissionsExt;
    let cluster = ClusterInfo::from_env();
    let image = UnpackedImage::new(&image_archive(), "config");
    let template = pod_template(&cluster);
    let pod = &template["spec"];
    let container = &pod["containers"][0];

    // User: numeric and not root, so the Deployment's runAsNonRoot holds without pinning a uid
    // (OpenShift's restricted SCC assigns one of the namespace's range and refuses any other).
    let (uid, gid) = image.user();
    assert_ne!(uid, 0, "the image runs as root");
    assert_ne!(gid, 0, "the image runs as group root");
    assert!(
        container["securityContext"]["runAsUser"].is_null(),
        "no pinned uid"
    );
    assert!(
        container["securityContext"]["runAsGroup"].is_null(),
        "no pinned gid"
    );
    assert_eq!(container["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);

    // Entrypoint: the operator; the Deployment gives only args, so they go to it.
    assert_eq!(
        image.field("Entrypoint"),
        &serde_json::json!(["/usr/local/bin/agentic-operator"])
    );
    assert!(image.field("Cmd").is_null(), "{}", image.config);
    assert!(
        container["command"].is_null(),
        "the Deployment overrides the entrypoint"
    );
    assert!(container["args"].as_array().is_some_and(|a| !a.is_empty()));

    // Ports: exactly the container's.
    let exposed: Vec<String> = image
        .field("ExposedPorts")
        .as_object()
        .expect("ExposedPorts")
        .keys()
        .cloned()
        .collect();
    let mut ports: Vec<String> = container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| {
            format!(
                "{}/{}",
                p["containerPort"],
                p["protocol"].as_str().unwrap_or("TCP").to_lowercase()
            )
        })
        .collect();
    ports.sort();
    assert_eq!(exposed, ports);

    // Working directory /app holding ./operator (SPEC §5.7).
    assert_eq!(image.field("WorkingDir"), "/app");

    // OCI labels.
    let labels: BTreeMap<String, String> =
        serde_json::from_value(image.field("Labels").clone()).expect("Labels");
    for (key, value) in [
        ("org.opencontainers.image.title", "agentic-operator"),
        (
            "org.opencontainers.image.licenses",
            env!("CARGO_PKG_LICENSE"),
        ),
        (
            "org.opencontainers.image.version",
            env!("CARGO_PKG_VERSION"),
        ),
    ] {
        assert_eq!(labels.get(key).map(String::as_str), Some(value), "{key}");
    }
    let revision = &labels["org.opencontainers.image.revision"];
    assert!(
        revision.len() >= 40 && revision.chars().take(40).all(|c| c.is_ascii_hexdigit()),
        "revision label {revision:?} is not a commit"
    );
    assert!(labels["org.opencontainers.image.description"].contains("Kubernetes operator"));

    // Files: the binary, its entrypoint link, nsswitch.conf; nothing else.
    assert_eq!(
        tree(&image.rootfs),
        [
            "app/",
            "app/operator",
            "etc/",
            "etc/nsswitch.conf",
            "usr/",
            "usr/local/",
            "usr/local/bin/",
            "usr/local/bin/agentic-operator -> ../../../app/operator",
        ]
    );
    let binary = image.rootfs.join("app/operator");
    let mode = std::fs::metadata(&binary)
        .expect("app/operator")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755, "mode of app/operator");
    assert!(!has_interpreter(
        &std::fs::read(&binary).expect("reading the binary")
    ));

    // `./operator` from the working directory, as the image's user: what a CronJob runs.
    let version = run(&mut image.command(&["./operator", "--version"]));
    assert_eq!(
        version.trim(),
        format!("agentic-operator {}", env!("CARGO_PKG_VERSION"))
    );
}

/// The operator started from the unpacked image; killed when dropped.
struct ImageOperator {
    child: Child,
    probes: String,
    metrics: String,
    log: PathBuf,
}

impl ImageOperator {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_ready(&mut self) {
        let log = self.log.display().to_string();
        let probes = self.probes.clone();
        wait_until(
            &format!("the image's operator ready (log {log})"),
            LIMIT,
            || {
                let probes = probes.clone();
                async move { (http_get(&probes, "/readyz").0 == 200).then_some(()) }
            },
        )
        .await;
        assert!(
            self.child.try_wait().expect("polling").is_none(),
            "the operator exited; log {log}"
        );
    }

    async fn wait_exit(&mut self) -> ExitStatus {
        let child = &mut self.child;
        wait_until("the operator to exit", LIMIT, || {
            let status = child.try_wait().expect("polling");
            async move { status }
        })
        .await
    }
}

impl Drop for ImageOperator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("the image's operator logged to {}", self.log.display());
        }
    }
}

/// A DNS server on a loopback address of its own, port 53, standing in for the cluster's DNS:
/// answers `A` queries for one name, an empty answer for its other types, NXDOMAIN for every
/// other name, and records the names asked.
struct LoopbackDns {
    address: std::net::Ipv4Addr,
    asked: std::sync::Arc<parking_lot::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LoopbackDns {
    /// Serves `name` → 127.0.0.1 on `127.53.x.y:53` (x.y from the process id, so parallel
    /// suites on one machine do not collide).
    fn serve(name: &str) -> Self {
        use std::sync::atomic::Ordering;
        let pid = std::process::id();
        let address = std::net::Ipv4Addr::new(127, 53, (pid >> 8) as u8, (pid as u8).max(1));
        let socket = std::net::UdpSocket::bind((address, 53))
            .unwrap_or_else(|e| panic!("binding {address}:53 (needs root): {e}"));
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("a read timeout");
        let asked = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (record, stopped, answer_for) = (asked.clone(), stop.clone(), name.to_string());
        let thread = std::thread::spawn(move || {
            let mut buffer = [0u8; 512];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((len, peer)) = socket.recv_from(&mut buffer) else {
                    continue;
                };
                if let Some((name, reply)) = dns_reply(&buffer[..len], &answer_for) {
                    record.lock().push(name);
                    let _ = socket.send_to(&reply, peer);
                }
            }
        });
        LoopbackDns {
            address,
            asked,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for LoopbackDns {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The reply to one DNS query (RFC 1035 §4.1): the name asked and the answer packet.
fn dns_reply(query: &[u8], known: &str) -> Option<(String, Vec<u8>)> {
    const HEADER: usize = 12;
    let mut labels = Vec::new();
    let mut at = HEADER;
    while *query.get(at)? != 0 {
        let len = usize::from(query[at]);
        labels.push(String::from_utf8_lossy(query.get(at + 1..at + 1 + len)?).into_owned());
        at += 1 + len;
    }
    let question_end = at + 5; // the root label, QTYPE, QCLASS
    let qtype = u16::from_be_bytes([*query.get(at + 1)?, *query.get(at + 2)?]);
    let name = labels.join(".");
    let matches = name.eq_ignore_ascii_case(known);
    let answers: u16 = u16::from(matches && qtype == 1);
    // QR, RD, RA; RCODE 3 (NXDOMAIN) for unknown names.
    let flags: u16 = if matches { 0x8180 } else { 0x8183 };
    let mut reply = Vec::with_capacity(question_end + 16);
    reply.extend_from_slice(&query[..2]);
    reply.extend_from_slice(&flags.to_be_bytes());
    for count in [1u16, answers, 0, 0] {
        reply.extend_from_slice(&count.to_be_bytes());
    }
    reply.extend_from_slice(query.get(HEADER..question_end)?);
    if answers == 1 {
        // A pointer to the question's name, type A, class IN, TTL 5 s, 127.0.0.1.
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 127, 0, 0, 1]);
    }
    Some((name, reply))
}

/// What a kubelet puts into the container: the ServiceAccount's files, /etc/hosts (localhost
/// only) and /etc/resolv.conf as for a pod in the operator's namespace (the search list and
/// `ndots:5` of the cluster-first DNS policy), pointing at `dns`.
fn add_kubelet_files(cluster: &ClusterInfo, rootfs: &Path, dns: &LoopbackDns) {
    let kubeconfig = rbac::operator_kubeconfig(cluster);
    let text = std::fs::read_to_string(&kubeconfig).expect("reading the operator's kubeconfig");
    let config: Value = serde_json::from_str(&text).expect("the operator's kubeconfig is JSON");
    let token = config["users"][0]["user"]["token"]
        .as_str()
        .expect("a token");
    let dir = rootfs.join(SERVICE_ACCOUNT_DIR);
    std::fs::create_dir_all(&dir).expect("creating the ServiceAccount directory");
    std::fs::write(dir.join("token"), token).expect("writing the token");
    std::fs::write(dir.join("namespace"), rbac::NAMESPACE).expect("writing the namespace");
    std::fs::copy(cluster.state_dir.join("pki/ca.crt"), dir.join("ca.crt"))
        .expect("copying the cluster CA");
    std::fs::write(rootfs.join("etc/hosts"), "127.0.0.1 localhost\n").expect("writing /etc/hosts");
    let namespace = rbac::NAMESPACE;
    std::fs::write(
        rootfs.join("etc/resolv.conf"),
        format!(
            "nameserver {}\nsearch {namespace}.svc.cluster.local svc.cluster.local \
             cluster.local\noptions ndots:5\n",
            dns.address
        ),
    )
    .expect("writing /etc/resolv.conf");
}

/// The API server's port, from the admin kubeconfig.
fn api_server_port(cluster: &ClusterInfo) -> String {
    let text = std::fs::read_to_string(&cluster.kubeconfig).expect("reading the kubeconfig");
    let config: serde_yaml::Value = serde_yaml::from_str(&text).expect("YAML kubeconfig");
    let server = config["clusters"][0]["cluster"]["server"]
        .as_str()
        .expect("a server");
    server
        .rsplit_once(':')
        .map(|(_, port)| port.trim_end_matches('/').to_string())
        .expect("a server with a port")
}

#[tokio::test]
async fn the_binary_from_the_image_runs_a_session_to_completion_inside_the_image() {
    let cluster = ClusterInfo::from_env();
    install_crds(&cluster);
    let image = UnpackedImage::new(&image_archive(), "run");
    let dns = LoopbackDns::serve(API_SERVER_NAME);
    add_kubelet_files(&cluster, &image.rootfs, &dns);
    let template = pod_template(&cluster);
    let container = &template["spec"]["containers"][0];
    let name = format!("image-{}", std::process::id());

    // The Deployment's args, admin addresses moved to loopback ports of their own.
    let (metrics, probes) = (
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{}", free_port()),
    );
    let args: Vec<String> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| {
            let arg = a.as_str().expect("a string arg");
            match arg.split_once('=') {
                Some(("--metrics-bind-address", _)) => format!("--metrics-bind-address={metrics}"),
                Some(("--health-probe-bind-address", _)) => {
                    format!("--health-probe-bind-address={probes}")
                }
                _ => arg.to_string(),
            }
        })
        .collect();
    let entrypoint: Vec<&str> = image
        .field("Entrypoint")
        .as_array()
        .expect("Entrypoint")
        .iter()
        .map(|s| s.as_str().expect("a string"))
        .collect();
    let program: Vec<&str> = entrypoint
        .iter()
        .copied()
        .chain(args.iter().map(String::as_str))
        .collect();
    let mut command = image.command(&program);
    // The Deployment's env (downward API values as a kubelet resolves them) and the in-cluster
    // service variables.
    for var in container["env"].as_array().expect("env") {
        let key = var["name"].as_str().expect("env name");
        let value = match key {
            "NAMESPACE" => rbac::NAMESPACE.to_string(),
            "POD_NAME" => name.clone(),
            // An optional Secret's key the test cluster does not have: unset, as in a pod.
            _ if var["valueFrom"]["secretKeyRef"]["optional"] == true => continue,
            _ => var["value"].as_str().expect("a plain value").to_string(),
        };
        // The registry and the model manifest: files the kubelet mounts from ConfigMaps made
        // of deploy/base/config, put where the Deployment says.
        if let Some(file) = rbac::mounted_config_file(key) {
            let target = image.rootfs.join(value.trim_start_matches('/'));
            std::fs::create_dir_all(target.parent().expect("a directory"))
                .expect("creating the config mount point");
            std::fs::copy(&file, &target)
                .unwrap_or_else(|e| panic!("copying {} into the image: {e}", file.display()));
        }
        command.env(key, value);
    }
    command
        .env("KUBERNETES_SERVICE_HOST", API_SERVER_NAME)
        .env("KUBERNETES_SERVICE_PORT", api_server_port(&cluster));
    let log = cluster
        .state_dir
        .join("logs")
        .join(format!("operator-{name}.log"));
    let file = std::fs::File::create(&log).expect("creating the log");
    let child = command
        .stdout(file.try_clone().expect("log handle"))
        .stderr(file)
        .spawn()
        .expect("starting the image's operator with unshare");
    let mut operator = ImageOperator {
        child,
        probes,
        metrics,
        log,
    };
    operator.wait_ready().await;
    // The API server's name was resolved through DNS, the search list tried first (ndots:5).
    let asked = dns.asked.lock().clone();
    assert!(
        asked.iter().any(|n| n == API_SERVER_NAME),
        "DNS was not asked for {API_SERVER_NAME}: {asked:?}"
    );
    assert!(
        asked
            .iter()
            .any(|n| n == &format!("{API_SERVER_NAME}.{}.svc.cluster.local", rbac::NAMESPACE)),
        "the search list was not used: {asked:?}"
    );

    // It is the image's binary, in the image's root, as the image's user.
    let root = std::fs::read_link(format!("/proc/{}/root", operator.pid())).expect("its root");
    assert_eq!(
        root,
        image.rootfs.canonicalize().expect("the rootfs path"),
        "the operator's root directory"
    );
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", operator.pid())).expect("its status");
    let (uid, _) = image.user();
    let uids = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .expect("a Uid line");
    assert!(
        uids.split_whitespace().all(|u| u == uid.to_string()),
        "Uid: {uids}"
    );

    let ns = TestNamespace::create(&cluster, "image").await;
    create(
        &ns.client,
        &ns.name,
        &session("smoke", &[("SIM_RUN_FOR", "2s")]),
    )
    .await;
    wait_for_phase(&ns.client, &ns.name, "smoke", Phase::Completed, LIMIT).await;
    // Through every phase, as counted by the image's operator itself.
    let text = http_get(&operator.metrics, "/metrics").1;
    for (from, to) in [
        ("Pending", "Creating"),
        ("Creating", "Running"),
        ("Running", "Completed"),
    ] {
        let count = metric_sum(
            &text,
            "ambient_session_phase_transitions_total",
            &[
                ("namespace", &ns.name),
                ("from_phase", from),
                ("to_phase", to),
            ],
        );
        assert_eq!(count, 1.0, "{from} -> {to} in\n{text}");
    }

    Command::new("kill")
        .args(["-TERM", &operator.pid().to_string()])
        .status()
        .expect("running kill");
    let status = operator.wait_exit().await;
    assert!(
        status.success(),
        "exit status {status}; log {}",
        operator.log.display()
    );
}
