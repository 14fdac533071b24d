//! Live reload and the admin endpoints that report on it: the file changing
//! on disk (in place, atomic rename, a Kubernetes ConfigMap symlink swap),
//! SIGHUP, POST /reload, the admin token. Where files or signals matter the
//! tests run the real `pgshift run`; the rest run the proxy in-process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgshift_tests::http;
use pgshift_tests::{base_yaml, free_port, fresh_db, pgshift_bin, APP_DB, SCRAM_AUTH};
use serde_json::Value;

const NAME: &str = "pgshift.yaml";

/// SPEC guarantee 5: `rollback: true` in force within 100 ms of the write.
const PROMPT: Duration = Duration::from_millis(100);

/// Longer than this means the watcher missed the change and the poll
/// fallback (every 2 s) found it.
const WORST: Duration = Duration::from_secs(1);

/// How the config file is laid out on disk and how an edit replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Truncate and write the file itself.
    InPlace,
    /// Write a temporary file next to it and rename it over (editors, `mv`).
    AtomicRename,
    /// `pgshift.yaml -> ..data/pgshift.yaml`, `..data -> ..<timestamp>`;
    /// an update is a new timestamped directory and a symlink renamed over
    /// `..data`, as the kubelet does for a mounted ConfigMap.
    ConfigMap,
}

struct ConfigDir {
    dir: tempfile::TempDir,
    layout: Layout,
    generation: u32,
}

impl ConfigDir {
    fn new(layout: Layout, text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ConfigDir {
            dir,
            layout,
            generation: 0,
        };
        config.write(text);
        if layout == Layout::ConfigMap {
            std::os::unix::fs::symlink(format!("..data/{NAME}"), config.path()).unwrap();
        }
        config
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join(NAME)
    }

    fn write(&mut self, text: &str) {
        let d = self.dir.path();
        self.generation += 1;
        match self.layout {
            Layout::InPlace => std::fs::write(d.join(NAME), text).unwrap(),
            Layout::AtomicRename => {
                let tmp = d.join(format!(".{NAME}.tmp"));
                std::fs::write(&tmp, text).unwrap();
                std::fs::rename(&tmp, d.join(NAME)).unwrap();
            }
            Layout::ConfigMap => {
                let stamp = |g: u32| format!("..2026_11_21_09_30_00.{g:06}");
                let fresh = stamp(self.generation);
                std::fs::create_dir(d.join(&fresh)).unwrap();
                std::fs::write(d.join(&fresh).join(NAME), text).unwrap();
                std::os::unix::fs::symlink(&fresh, d.join("..data_tmp")).unwrap();
                std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
                if self.generation > 1 {
                    std::fs::remove_dir_all(d.join(stamp(self.generation - 1))).unwrap();
                }
            }
        }
    }
}

/// `pgshift run` on a config directory, killed when dropped.
struct Running {
    child: Child,
    config: ConfigDir,
    /// The config without the per-test tail that edits change.
    base: String,
    admin: SocketAddr,
    listen: u16,
    db: String,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
}

impl Running {
    async fn start(prefix: &str, layout: Layout, extra: &str) -> Running {
        let db = fresh_db(prefix);
        let listen = free_port();
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let base = format!(
            "{}{SCRAM_AUTH}admin: {admin}\n",
            base_yaml(&db).replace(
                "listen: 127.0.0.1:0",
                &format!("listen: 127.0.0.1:{listen}")
            )
        );
        let config = ConfigDir::new(layout, &format!("{base}{extra}"));
        // Not in the config directory: trace logging of the watcher's own
        // events would feed itself.
        let log_dir = tempfile::tempdir().unwrap();
        let log = log_dir.path().join("pgshift.log");
        let child = Command::new(pgshift_bin())
            .args(["run", "--config"])
            .arg(config.path())
            .env(
                "RUST_LOG",
                std::env::var("PGSHIFT_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut running = Running {
            child,
            config,
            base,
            admin,
            listen,
            db,
            log,
            _log_dir: log_dir,
        };
        running.wait_ready().await;
        running
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(self.admin).await.is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("pgshift exited with {status}:\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "admin never came up:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Replaces the tail of the config (after listen, backends, auth, admin).
    fn edit(&mut self, extra: &str) {
        let text = format!("{}{extra}", self.base);
        self.config.write(&text);
    }

    async fn status(&self) -> Value {
        http::get_json(self.admin, "/status").await
    }

    /// Polls /status until `done` holds; the time since `since`, or `None`
    /// after `within`.
    async fn wait_status(
        &self,
        since: Instant,
        within: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Option<Duration> {
        loop {
            let status = self.status().await;
            if done(&status) {
                return Some(since.elapsed());
            }
            if since.elapsed() > within {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn signal(&self, signal: i32) {
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn select_one(&self) -> i32 {
        let url = format!(
            "postgres://app:app-secret@127.0.0.1:{}/{}",
            self.listen, self.db
        );
        let client = pgshift_tests::connect(&url).await;
        client.query_one("SELECT 1", &[]).await.unwrap().get(0)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn version(status: &Value) -> u64 {
    status["version"]
        .as_u64()
        .unwrap_or_else(|| panic!("no version in {status}"))
}

const BAD_REGEX: &str = "rules:
  - name: broken
    match: { kind: [read], sql: \"(unclosed\" }
    primary: new
";

#[tokio::test]
async fn post_reload_applies_the_edited_file() {
    let mut proxy = Running::start("reload_post", Layout::AtomicRename, "").await;
    let before = proxy.status().await;
    assert_eq!(version(&before), 1, "{before}");
    assert_eq!(before["rollback"], false);
    assert_eq!(before["reloads"]["ok"], 0);
    assert_eq!(before["reloads"]["failed"], 0);
    assert_eq!(before["last_reload_error"], Value::Null);
    let path = before["config_path"].as_str().unwrap();
    assert!(path.ends_with(NAME), "{before}");
    let loaded_at = before["loaded_at"].as_str().unwrap();
    assert!(
        loaded_at.len() == 24 && loaded_at.ends_with('Z') && loaded_at.as_bytes()[10] == b'T',
        "RFC 3339 UTC: {loaded_at}"
    );

    proxy.edit("rollback: true\n");
    let (code, body) = http::post(proxy.admin, "/reload", None).await;
    assert_eq!(code, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    // The watcher sees the same edit; whichever comes first loads it as
    // version 2, and the other reloads it again only if it is POST.
    let v = version(&reply);
    assert!(v == 2 || v == 3, "{reply}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = proxy.status().await;
    assert_eq!(version(&after), v, "nothing else reloaded: {after}");
    assert_eq!(after["loaded_at"], reply["loaded_at"]);
    assert_eq!(after["rollback"], true, "the edit is in force");
    assert_eq!(after["reloads"]["ok"], v - 1);

    // Unchanged file: POST still reloads, as asked, and only POST does.
    let (code, body) = http::post(proxy.admin, "/reload", None).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(version(&serde_json::from_str(&body).unwrap()), v + 1);
    assert_eq!(version(&proxy.status().await), v + 1);
    assert!(proxy.alive());
}

#[tokio::test]
async fn invalid_edit_is_rejected_and_the_old_config_stays() {
    let mut proxy = Running::start("reload_invalid", Layout::AtomicRename, "").await;
    proxy.edit(BAD_REGEX);
    let (code, body) = http::post(proxy.admin, "/reload", None).await;
    assert_eq!(code, 400, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(version(&reply), 1, "{reply}");
    let errors = reply["errors"].as_array().expect("errors is a list");
    assert!(
        errors
            .iter()
            .any(|e| e.as_str().unwrap().contains("rules[0].match.sql")),
        "each error with its path: {reply}"
    );
    assert!(reply["error"].as_str().unwrap().contains(NAME), "{reply}");

    let status = proxy.status().await;
    assert_eq!(version(&status), 1, "{status}");
    assert_eq!(status["rollback"], false);
    assert_eq!(status["reloads"]["ok"], 0);
    assert!(status["reloads"]["failed"].as_u64().unwrap() >= 1);
    let last = status["last_reload_error"].as_str().unwrap_or_default();
    assert!(last.contains("rules[0].match.sql"), "{status}");
    assert_eq!(proxy.select_one().await, 1, "still serving");
    assert!(
        proxy.log_text().contains("rules[0].match.sql"),
        "the error is logged"
    );

    // Fixing the file is picked up by the watcher and clears the error.
    let fixed = Instant::now();
    proxy.edit("rollback: true\n");
    let took = proxy
        .wait_status(fixed, WORST, |s| version(s) == 2)
        .await
        .expect("the fixed file is loaded");
    let status = proxy.status().await;
    assert_eq!(status["last_reload_error"], Value::Null, "{status}");
    assert_eq!(status["rollback"], true);
    println!("fixed config visible after {took:?}");
}

/// Five edits, each flipping `rollback`; every one must become visible as
/// the next version. Returns the times from write to visible.
async fn edits_become_visible(layout: Layout) -> Vec<Duration> {
    let mut proxy = Running::start(&format!("reload_{layout:?}"), layout, "").await;
    let mut times = Vec::new();
    for i in 0..5u64 {
        let rollback = i % 2 == 0;
        let written = Instant::now();
        proxy.edit(&format!("rollback: {rollback}\n# edit {i}\n"));
        let took = proxy
            .wait_status(written, Duration::from_secs(5), |s| {
                version(s) == i + 2 && s["rollback"] == rollback
            })
            .await
            .unwrap_or_else(|| panic!("{layout:?} edit {i} never loaded:\n{}", proxy.log_text()));
        times.push(took);
        // Later events of the same save must not reload it again.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(version(&proxy.status().await), i + 2, "one reload per edit");
    }
    let status = proxy.status().await;
    assert_eq!(status["reloads"]["ok"], 5, "{status}");
    // No half-written file was ever read.
    assert_eq!(status["reloads"]["failed"], 0, "{status}");
    assert!(proxy.alive());
    let mut sorted = times.clone();
    sorted.sort();
    let p50 = sorted[sorted.len() / 2];
    let worst = sorted[sorted.len() - 1];
    println!("{layout:?}: write -> new version visible: {times:?} (p50 {p50:?}, worst {worst:?})");
    assert!(p50 < PROMPT, "{layout:?} p50 {p50:?}: {times:?}");
    assert!(worst < WORST, "{layout:?} worst {worst:?}: {times:?}");
    times
}

#[tokio::test]
async fn in_place_write_reloads() {
    edits_become_visible(Layout::InPlace).await;
}

#[tokio::test]
async fn atomic_rename_reloads() {
    edits_become_visible(Layout::AtomicRename).await;
}

#[tokio::test]
async fn configmap_symlink_swap_reloads() {
    edits_become_visible(Layout::ConfigMap).await;
}

#[tokio::test]
async fn a_slow_in_place_write_is_read_once_closed() {
    let proxy = Running::start("reload_slow_write", Layout::InPlace, "").await;
    let text = format!("{}rollback: true\n", proxy.base);
    // Cut inside `true`: the first part alone is an invalid file.
    let (head, tail) = text.split_at(text.len() - 3);
    let (head, tail) = (head.to_owned(), tail.to_owned());
    let path = proxy.config.path();
    let written = Instant::now();
    tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(head.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        file.write_all(tail.as_bytes()).unwrap();
    })
    .await
    .unwrap();
    let took = proxy
        .wait_status(written, WORST, |s| version(s) == 2)
        .await
        .expect("the file is loaded once written");
    println!("slow in-place write visible after {took:?} (60 ms of it writing)");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let status = proxy.status().await;
    assert_eq!(version(&status), 2, "{status}");
    assert_eq!(status["rollback"], true);
    assert_eq!(
        status["reloads"]["failed"], 0,
        "the half-written file was never read: {status}"
    );
}

#[tokio::test]
async fn rollback_flip_is_visible_within_100ms() {
    let mut proxy = Running::start("reload_rollback", Layout::ConfigMap, "rollback: false\n").await;
    assert_eq!(proxy.status().await["rollback"], false);
    // Flip it on, off and on again: the median must be within the SPEC's
    // 100 ms (the median, so one hiccup of a loaded test machine does not
    // fail it) and none may need the poll fallback.
    let mut times = Vec::new();
    for rollback in [true, false, true] {
        let written = Instant::now();
        proxy.edit(&format!("rollback: {rollback}\n"));
        let took = proxy
            .wait_status(written, WORST, |s| s["rollback"] == rollback)
            .await
            .unwrap_or_else(|| panic!("rollback: {rollback} not loaded:\n{}", proxy.log_text()));
        times.push(took);
    }
    println!("rollback flips visible after {times:?}");
    let mut sorted = times.clone();
    sorted.sort();
    assert!(sorted[1] < PROMPT, "rollback flips took {times:?}");
    assert_eq!(proxy.select_one().await, 1, "connections keep working");
}

#[tokio::test]
async fn sighup_reloads() {
    let mut proxy = Running::start("reload_sighup", Layout::AtomicRename, "").await;

    // Nothing changed, so only the signal can make version 2.
    let sent = Instant::now();
    proxy.signal(libc::SIGHUP);
    proxy
        .wait_status(sent, Duration::from_secs(5), |s| version(s) == 2)
        .await
        .expect("SIGHUP reloads");
    assert!(proxy.alive(), "SIGHUP does not kill pgshift");

    // After an edit.
    let sent = Instant::now();
    proxy.edit("rollback: true\n");
    proxy.signal(libc::SIGHUP);
    proxy
        .wait_status(sent, Duration::from_secs(5), |s| {
            version(s) >= 3 && s["rollback"] == true
        })
        .await
        .expect("the edit is loaded");

    // An invalid file: the watcher rejects it first; SIGHUP tries again and
    // is rejected too, and the version stays.
    let written = Instant::now();
    proxy.edit(BAD_REGEX);
    proxy
        .wait_status(written, Duration::from_secs(5), |s| {
            s["reloads"]["failed"] == 1
        })
        .await
        .expect("the watcher reports the invalid file");
    let before = proxy.status().await;
    let sent = Instant::now();
    proxy.signal(libc::SIGHUP);
    proxy
        .wait_status(sent, Duration::from_secs(5), |s| {
            s["reloads"]["failed"] == 2
        })
        .await
        .expect("SIGHUP with an invalid file is reported");
    let after = proxy.status().await;
    assert_eq!(version(&after), version(&before), "{after}");
    assert_eq!(after["rollback"], true, "the previous config stays");
    assert!(
        after["last_reload_error"]
            .as_str()
            .unwrap_or_default()
            .contains("rules[0].match.sql"),
        "{after}"
    );
    assert!(proxy.alive());
    assert_eq!(proxy.select_one().await, 1);
    let log = proxy.log_text();
    assert!(log.contains("SIGHUP"), "the trigger is logged:\n{log}");
}

/// pgshift in this process, with the admin server on a free port.
async fn in_process(extra: &str, path: Option<PathBuf>) -> pgshift::Proxy {
    pgshift::logging::init_with_default(pgshift::logging::Format::Text, "warn");
    let yaml = format!(
        "{}{SCRAM_AUTH}admin: 127.0.0.1:0\n{extra}",
        base_yaml(APP_DB)
    );
    let config = pgshift_rules::config::parse_config(&yaml, &|_| None)
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    pgshift::server::start_with(config, path).await.unwrap()
}

#[tokio::test]
async fn admin_token_guards_post_only() {
    let extra = "admin_token: s3cret-token\n";
    let config = ConfigDir::new(
        Layout::AtomicRename,
        &format!(
            "{}{SCRAM_AUTH}admin: 127.0.0.1:0\n{extra}",
            base_yaml(APP_DB)
        ),
    );
    let proxy = in_process(extra, Some(config.path())).await;
    let admin = proxy.admin_addr().expect("admin is configured");

    for token in [
        None,
        Some("wrong"),
        Some("s3cret-toke"),
        Some("s3cret-tokenX"),
    ] {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let reply = http::request(admin, "POST", "/reload", &headers, b"").await;
        assert_eq!(reply.status, 401, "{token:?}: {}", reply.body);
        assert!(reply.json()["error"].is_string());
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    }
    assert_eq!(proxy.shared().current().version, 1, "no reload happened");
    assert_eq!(proxy.shared().reload_log().failed, 0);

    let (code, body) = http::post(admin, "/reload", Some("s3cret-token")).await;
    assert_eq!(code, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(version(&reply), 2);
    let status = http::get_json(admin, "/status").await;
    assert_eq!(version(&status), 2, "GET needs no token");
    assert_eq!(status["reloads"]["ok"], 1);
    proxy.force_shutdown();
    proxy.wait().await;
}

#[tokio::test]
async fn admin_replies_are_json_and_it_stops_on_shutdown() {
    let proxy = in_process("", None).await;
    let admin = proxy.admin_addr().expect("admin is configured");
    assert_ne!(admin.port(), 0);

    let status = http::get_json(admin, "/status").await;
    assert_eq!(version(&status), 1);
    assert_eq!(status["config_path"], Value::Null);
    assert_eq!(status["rollback"], false);

    // Nothing to reload without a file: a clear 400, and not a failed reload.
    let (code, body) = http::post(admin, "/reload", None).await;
    assert_eq!(code, 400, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("without a configuration file"),
        "{reply}"
    );
    assert_eq!(version(&reply), 1);
    assert_eq!(
        http::get_json(admin, "/status").await["reloads"]["failed"],
        0
    );

    let (code, body) = http::get(admin, "/no-such-page").await;
    assert_eq!(code, 404, "{body}");
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string());
    let (code, body) = http::get(admin, "/reload").await;
    assert_eq!(code, 405, "{body}");
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"].is_string());
    let reply = http::request(admin, "DELETE", "/status", &[], b"").await;
    assert_eq!(reply.status, 405, "{}", reply.body);

    let big = vec![b'x'; 64 * 1024 + 1];
    let reply = http::request(admin, "POST", "/reload", &[], &big).await;
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert!(reply.json()["error"].is_string());
    let fits = vec![b'x'; 1024];
    let reply = http::request(admin, "POST", "/reload", &[], &fits).await;
    assert_eq!(reply.status, 400, "a small body is fine: {}", reply.body);

    proxy.begin_shutdown();
    tokio::time::timeout(Duration::from_secs(10), proxy.finished())
        .await
        .expect("shutdown completes");
    assert!(
        tokio::net::TcpStream::connect(admin).await.is_err(),
        "the admin server is gone"
    );
    proxy.wait().await;
}
