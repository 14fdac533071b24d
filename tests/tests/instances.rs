//! Several pgshift instances behind a load balancer share one config file
//! (per-instance differences, here the ports, come from the environment):
//! percentage routing must agree across them, and a change to the file
//! must reach all of them.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pgshift_tests::{
    base_yaml, free_port, fresh_db, http, mark_sides, pgshift_bin, side_simple, SCRAM_AUTH,
};

struct Instance {
    child: Child,
    listen: u16,
    admin: SocketAddr,
}

impl Instance {
    fn start(config: &std::path::Path) -> Instance {
        let (listen, admin) = (free_port(), free_port());
        let child = Command::new(pgshift_bin())
            .args(["run", "--config"])
            .arg(config)
            .env("PGSHIFT_PORT", listen.to_string())
            .env("PGSHIFT_ADMIN_PORT", admin.to_string())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Instance {
            child,
            listen,
            admin: format!("127.0.0.1:{admin}").parse().unwrap(),
        }
    }

    async fn ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(self.admin).await.is_err() {
            assert!(self.child.try_wait().unwrap().is_none(), "pgshift exited");
            assert!(Instant::now() < deadline, "pgshift never came up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn side_for(&self, db: &str, application_name: &str) -> String {
        let url = format!(
            "postgres://app:app-secret@127.0.0.1:{}/{db}?application_name={application_name}",
            self.listen
        );
        side_simple(&pgshift_tests::connect(&url).await).await
    }

    async fn version(&self) -> u64 {
        http::get_json(self.admin, "/status").await["version"]
            .as_u64()
            .unwrap()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SHIFT: &str = "rules:
  - name: half-the-apps
    match: { kind: [read] }
    percent: 50
    sticky: application_name
    primary: new
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_route_alike_and_both_follow_a_config_change() {
    let db = fresh_db("instances");
    mark_sides(&db);
    let base = format!(
        "{}{SCRAM_AUTH}admin: 127.0.0.1:${{PGSHIFT_ADMIN_PORT}}\n",
        base_yaml(&db).replace("listen: 127.0.0.1:0", "listen: 127.0.0.1:${PGSHIFT_PORT}")
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgshift.yaml");
    std::fs::write(&path, format!("{base}{SHIFT}")).unwrap();
    let mut a = Instance::start(&path);
    let mut b = Instance::start(&path);
    a.ready().await;
    b.ready().await;

    let apps: Vec<String> = (0..24).map(|i| format!("service-{i}")).collect();
    let mut on_new = 0;
    for app in &apps {
        let (sa, sb) = (a.side_for(&db, app).await, b.side_for(&db, app).await);
        assert_eq!(sa, sb, "{app} is routed alike by both instances");
        on_new += usize::from(sa == "new");
    }
    assert!(
        (4..=20).contains(&on_new),
        "about half the applications read from NEW: {on_new} of {}",
        apps.len()
    );

    // One edit of the shared file (an atomic rename, as editors and
    // ConfigMaps do it) reaches both.
    let tmp = dir.path().join("pgshift.yaml.tmp");
    std::fs::write(&tmp, format!("{base}rollback: true\n{SHIFT}")).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in [&a, &b] {
        while i.version().await < 2 {
            assert!(Instant::now() < deadline, "an instance missed the change");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    for app in &apps {
        assert_eq!(a.side_for(&db, app).await, "old", "{app} via A");
        assert_eq!(b.side_for(&db, app).await, "old", "{app} via B");
    }
}
