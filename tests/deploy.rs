//! The deployment files in `deploy/`: the Kubernetes manifests validate
//! against Kubernetes' schemas (kubernetes-validate, strict) and fit
//! together (names, labels, ports, probes, the user the image runs as);
//! the ConfigMap's project loads with the Deployment's environment and its
//! definitions validate; every command the manifests run parses; the
//! Dockerfile passes hadolint. And `wafer plan --exit-code`, the CI/CD gate
//! the README documents.

#[path = "common/cli.rs"]
mod cli;
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use serde_json::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// Every document of every manifest, by `kind/name`.
fn manifests() -> HashMap<String, Value> {
    let mut all = HashMap::new();
    for file in resource_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for document in text.split("\n---\n") {
            let value: Value = serde_saphyr::from_str(document)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let key = format!(
                "{}/{}",
                value["kind"].as_str().unwrap(),
                value["metadata"]["name"].as_str().unwrap()
            );
            assert!(all.insert(key.clone(), value).is_none(), "{key} twice");
        }
    }
    all
}

/// The resources kustomization.yaml lists, which must be every other
/// manifest in the directory.
fn resource_files() -> Vec<PathBuf> {
    let dir = deploy_dir().join("kubernetes");
    let kustomization: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap())
            .unwrap();
    let mut listed: Vec<String> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
        .collect();
    listed.sort();
    present.sort();
    assert_eq!(listed, present, "kustomization.yaml lists every manifest");
    listed.iter().map(|name| dir.join(name)).collect()
}

/// A tool the README's test command installs.
fn tool(name: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .unwrap();
    assert!(
        found.status.success(),
        "{name} is missing: run the README's test command (.ci/test), which installs it"
    );
    Command::new(name)
}

#[test]
fn manifests_validate_against_the_kubernetes_schemas() {
    let output = tool("kubernetes-validate")
        .arg("--strict")
        .args(resource_files())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_dockerfile_passes_hadolint_and_makes_a_small_non_root_image() {
    let dockerfile = deploy_dir().join("Dockerfile");
    let output = tool("hadolint").arg(&dockerfile).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    let text = std::fs::read_to_string(&dockerfile).unwrap();
    let stages: Vec<&str> = text.split("\nFROM ").skip(1).collect();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    assert!(stages[0].contains("cargo build --release --locked"));
    let runtime = stages[1];
    assert!(
        runtime.starts_with("debian:") && runtime.contains("-slim"),
        "{runtime}"
    );
    assert!(runtime.contains("COPY --from=build "), "{runtime}");
    assert!(
        !runtime.contains("cargo"),
        "no toolchain in the runtime image"
    );
    assert_eq!(image_user(), 10001);
    assert!(runtime.contains("ENTRYPOINT [\"/usr/local/bin/wafer\"]"));
}

/// The numeric user the runtime image runs as.
fn image_user() -> i64 {
    let text = std::fs::read_to_string(deploy_dir().join("Dockerfile")).unwrap();
    let user = text
        .lines()
        .rev()
        .find_map(|line| line.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    user.trim()
        .parse()
        .expect("USER is numeric (runAsNonRoot checks it)")
}

/// The pod spec of a Deployment or a CronJob.
fn pod_spec(resource: &Value) -> &Value {
    match resource["kind"].as_str() {
        Some("CronJob") => &resource["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        _ => &resource["spec"]["template"]["spec"],
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_manifests_fit_together() {
    let all = manifests();
    let get = |key: &str| all.get(key).unwrap_or_else(|| panic!("no {key}"));
    let deployment = get("Deployment/wafer");
    let service = get("Service/wafer");
    let secret = get("Secret/wafer-tokens");
    let config_map = get("ConfigMap/wafer-project");
    let redis_service = get("Service/wafer-redis");
    let cronjob = get("CronJob/wafer-materialize");

    // Several replicas; the Service selects their pods.
    assert!(deployment["spec"]["replicas"].as_i64().unwrap() >= 2);
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (key, value) in deployment["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&pod_labels[key], value, "selector {key}");
    }
    for (key, value) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&pod_labels[key], value, "Service selector {key}");
    }
    // Their exact ports and probes.
    let container = &pod_spec(deployment)["containers"][0];
    let http = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "http")
        .expect("a port named http");
    let args = strings(&container["args"]);
    let port_arg = args.iter().position(|a| a == "--port").unwrap();
    assert_eq!(
        args[port_arg + 1],
        http["containerPort"].as_i64().unwrap().to_string()
    );
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
    // Ready while the store answers; alive while the process accepts
    // connections (a Redis outage must not restart every replica).
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "http");
    assert_eq!(container["livenessProbe"]["tcpSocket"]["port"], "http");

    for resource in [deployment, cronjob] {
        let spec = pod_spec(resource);
        let container = &spec["containers"][0];
        // Non-root, as the image's own user.
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            spec["securityContext"]["runAsUser"].as_i64(),
            Some(image_user())
        );
        assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
        // What it runs is a valid command line.
        let mut argv = vec!["wafer".to_string()];
        argv.extend(strings(&container["args"]));
        if let Err(e) = wafer::cli::Cli::try_parse_from(&argv) {
            panic!("{argv:?}: {e}");
        }
        // With a read-only root, what the binary writes is mounted: the
        // data directory, /tmp, and DuckDB's spill directory (`.tmp` in
        // the working directory, the image's /project).
        let data_dir = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "WAFER_DATA_DIR")
            .and_then(|v| v["value"].as_str())
            .expect("WAFER_DATA_DIR");
        for writable in [data_dir, "/tmp", "/project/.tmp"] {
            let mounted = container["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["mountPath"] == writable && m["readOnly"].as_bool() != Some(true));
            assert!(mounted, "{writable} is not a writable mount");
        }
        // Every mount names a volume, and every volume a resource here.
        let volumes: HashMap<&str, &Value> = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| (v["name"].as_str().unwrap(), v))
            .collect();
        for mount in container["volumeMounts"].as_array().unwrap() {
            let volume = volumes[mount["name"].as_str().unwrap()];
            if let Some(name) = volume["configMap"]["name"].as_str() {
                assert!(all.contains_key(&format!("ConfigMap/{name}")), "{name}");
                let key = mount["subPath"].as_str().unwrap();
                assert!(config_map["data"][key].is_string(), "{key}");
            }
            if let Some(claim) = volume["persistentVolumeClaim"]["claimName"].as_str() {
                assert!(
                    all.contains_key(&format!("PersistentVolumeClaim/{claim}")),
                    "{claim}"
                );
            }
        }
    }
    assert_eq!(cronjob["spec"]["concurrencyPolicy"], "Forbid");

    // The project in the ConfigMap, with the Deployment's environment
    // (tokens taken from the Secret), loads; its Redis is the Service here.
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in config_map["data"].as_object().unwrap() {
        std::fs::write(dir.path().join(name), text.as_str().unwrap()).unwrap();
    }
    let env: Vec<(String, String)> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|var| {
            let name = var["name"].as_str().unwrap().to_string();
            let value = match var["value"].as_str() {
                Some(value) => value.to_string(),
                None => {
                    let from = &var["valueFrom"]["secretKeyRef"];
                    assert_eq!(from["name"], secret["metadata"]["name"], "{name}");
                    secret["stringData"][from["key"].as_str().unwrap()]
                        .as_str()
                        .unwrap_or_else(|| panic!("{name}: no such key in the Secret"))
                        .to_string()
                }
            };
            (name, value)
        })
        .collect();
    let config = wafer::config::Config::load_with_env(dir.path(), env).unwrap();
    assert!(config.server.auth.enabled());
    assert_eq!(config.registry.kind, wafer::config::RegistryKind::Redis);
    assert_eq!(
        config.online_store.kind,
        Some(wafer::config::OnlineStoreKind::Redis)
    );
    let redis = format!(
        "redis://{}:{}/",
        redis_service["metadata"]["name"].as_str().unwrap(),
        redis_service["spec"]["ports"][0]["port"]
    );
    for url in [&config.registry.url, &config.online_store.url] {
        assert!(url.as_deref().unwrap().starts_with(&redis), "{url:?}");
    }

    // Its definitions validate against data of the example's shape.
    let root = tempfile::tempdir().unwrap();
    cli::init_example(root.path(), 5, 3);
    std::fs::write(
        root.path().join("definitions.yaml"),
        config_map["data"]["definitions.yaml"].as_str().unwrap(),
    )
    .unwrap();
    cli::ok(cli::wafer(root.path(), &["plan"]));
}

#[test]
fn plan_exit_code_is_a_ci_gate() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    cli::init_example(dir, 5, 3);
    let code = |dir: &Path| {
        cli::wafer(dir, &["plan", "--exit-code"])
            .status
            .code()
            .unwrap()
    };
    // Pending changes: 2. Applied: 0. Invalid definitions: 1.
    assert_eq!(code(dir), 2);
    cli::ok(cli::wafer(dir, &["apply"]));
    assert_eq!(code(dir), 0);
    let definitions = std::fs::read_to_string(dir.join("definitions.yaml")).unwrap();
    let changed = definitions.replace("ttl: 1d", "ttl: 2d");
    assert_ne!(changed, definitions);
    std::fs::write(dir.join("definitions.yaml"), &changed).unwrap();
    assert_eq!(code(dir), 2);
    // Without the flag, pending changes exit 0 as before.
    let plan = cli::ok(cli::wafer(dir, &["plan"]));
    assert!(plan.contains("driver_hourly_stats"), "{plan}");
    std::fs::write(dir.join("definitions.yaml"), "feature_views: [{name: x}]\n").unwrap();
    assert_eq!(code(dir), 1);
    // A mistyped flag is an error (1), never "changes pending" (2).
    let typo = cli::wafer(dir, &["plan", "--exit-cod"]);
    assert_eq!(typo.status.code(), Some(1));
}
