//! The deployment files shipped in the repository: docker-compose.yml (the
//! CI machine cannot run compose, so its structure is checked instead), the
//! Dockerfile, and the Kubernetes example.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(root().join(path)).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `pgshift check` on a config file, offline.
fn check(path: &Path) -> std::process::Output {
    Command::new(pgshift_tests::pgshift_bin())
        .envs([
            ("APP_PASSWORD", "a"),
            ("BACKEND_PASSWORD", "b"),
            ("OLD_PASSWORD", "c"),
            ("NEW_PASSWORD", "d"),
            ("ADMIN_TOKEN", "e"),
        ])
        .args(["check", "--skip-catalog", "--config"])
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn compose_wires_old_new_pgshift_and_prometheus_on_one_network() {
    let c = yaml("docker-compose.yml");
    let services = c["services"].as_object().expect("services");
    let names: Vec<&str> = services.keys().map(String::as_str).collect();
    for s in ["old", "new", "pgshift", "prometheus"] {
        assert!(names.contains(&s), "service {s} missing: {names:?}");
        assert_eq!(
            strings(&services[s]["networks"]),
            ["migration"],
            "{s} is on the shared network"
        );
    }
    assert!(c["networks"]["migration"].is_object());

    for pg in ["old", "new"] {
        assert_eq!(services[pg]["image"], "postgres:16");
        let mounts = strings(&services[pg]["volumes"]);
        assert!(
            mounts
                .iter()
                .any(|m| m.contains(":/docker-entrypoint-initdb.d/")),
            "{pg} gets init SQL: {mounts:?}"
        );
    }
    assert_eq!(strings(&services["old"]["ports"]), ["5432:5432"]);
    assert_eq!(strings(&services["new"]["ports"]), ["5433:5432"]);

    let p = &services["pgshift"];
    assert_eq!(p["build"], ".", "built from the repository's Dockerfile");
    assert_eq!(strings(&p["ports"]), ["6432:6432", "9930:9930"]);
    let mounts = strings(&p["volumes"]);
    assert_eq!(
        mounts,
        ["./examples/compose:/etc/pgshift:ro"],
        "the config's directory is mounted, so an edit (even by rename) reloads"
    );
    let command = strings(&p["command"]);
    assert_eq!(command, ["run", "--config", "/etc/pgshift/pgshift.yaml"]);
    for dep in ["old", "new"] {
        assert_eq!(p["depends_on"][dep]["condition"], "service_healthy");
    }

    let prom = &services["prometheus"];
    assert_eq!(strings(&prom["ports"]), ["9090:9090"]);
    let mounts = strings(&prom["volumes"]);
    assert_eq!(
        mounts,
        ["./examples/compose/prometheus.yml:/etc/prometheus/prometheus.yml:ro"]
    );

    // Every host path mounted exists.
    for s in services.values() {
        for m in strings(&s["volumes"]) {
            let host = m.split(':').next().unwrap();
            assert!(root().join(host).exists(), "{host} is mounted but missing");
        }
    }

    // Prometheus scrapes the admin port pgshift listens on.
    let prom_cfg = yaml("examples/compose/prometheus.yml");
    let targets = strings(&prom_cfg["scrape_configs"][0]["static_configs"][0]["targets"]);
    assert_eq!(targets, ["pgshift:9930"]);
    let config = yaml("examples/compose/pgshift.yaml");
    assert_eq!(config["admin"], "0.0.0.0:9930");
    assert_eq!(config["listen"], "0.0.0.0:6432");
    for b in ["old", "new"] {
        let url = config["backends"][b]["url"].as_str().unwrap();
        assert!(url.contains(&format!("@{b}:5432/")), "{url}");
    }
    let out = check(&root().join("examples/compose/pgshift.yaml"));
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn dockerfile_is_multi_stage_and_runs_as_non_root() {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "build and runtime stages: {froms:?}");
    assert!(froms[1].contains("slim"), "{froms:?}");
    let user = text
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("a USER line");
    assert!(!user.contains("root") && !user.ends_with(" 0"), "{user}");
    assert!(text.contains("COPY --from=build"));
}

#[test]
fn kubernetes_example_mounts_a_valid_config_map() {
    let text = std::fs::read_to_string(root().join("examples/kubernetes/pgshift.yaml")).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let find = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    let (cm, deploy, svc) = (find("ConfigMap"), find("Deployment"), find("Service"));
    find("Secret");

    let file = tempfile::NamedTempFile::new().unwrap();
    let config_text = cm["data"]["pgshift.yaml"].as_str().unwrap();
    std::fs::write(file.path(), config_text).unwrap();
    let out = check(file.path());
    assert!(out.status.success(), "{out:?}");
    let config: Value = serde_saphyr::from_str(config_text).unwrap();

    let spec = &deploy["spec"]["template"]["spec"];
    assert!(deploy["spec"]["replicas"].as_u64().unwrap() >= 2);
    let container = &spec["containers"][0];
    assert_eq!(
        strings(&container["args"]),
        ["run", "--config", "/etc/pgshift/pgshift.yaml"]
    );
    let mount = &container["volumeMounts"][0];
    assert_eq!(
        mount["mountPath"], "/etc/pgshift",
        "a directory: ConfigMap updates are symlink swaps"
    );
    let volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    assert_eq!(volume["configMap"]["name"], cm["metadata"]["name"]);
    assert!(spec["securityContext"]["runAsNonRoot"].as_bool().unwrap());

    let ports = container["ports"].as_array().unwrap();
    let port = |name: &str| {
        ports
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap()
    };
    let listen = config["listen"].as_str().unwrap();
    let admin = config["admin"].as_str().unwrap();
    assert!(
        listen.ends_with(&format!(":{}", port("postgres"))),
        "{listen}"
    );
    assert!(admin.ends_with(&format!(":{}", port("admin"))), "{admin}");

    let labels = &deploy["spec"]["template"]["metadata"]["labels"];
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "the Service selects the Deployment's pods");
    }
}
