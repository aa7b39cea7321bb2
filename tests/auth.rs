//! Every route of `wafer serve` needs exactly its role: the test walks the
//! server's own OpenAPI document, so a route added without an entry here, or
//! a guard moved to another role, fails it.

#[path = "common/cli.rs"]
mod cli;
mod common;
#[path = "common/server.rs"]
mod server;

use serde_json::Value;
use server::{http_with, Server};

/// Roles in the order they grant: each grants everything below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Role {
    Read,
    Edge,
    Write,
    Admin,
}

const READ: &str = "read-token-0123456789";
const EDGE: &str = "edge-token-0123456789";
const WRITE: &str = "write-token-0123456789";
const ADMIN: &str = "admin-token-0123456789";
/// Listed under read and under admin: grants admin.
const BOTH: &str = "both-token-0123456789";
/// Configured with spaces around it.
const PADDED: &str = "padded-token-0123456789";

fn token(role: Role) -> &'static str {
    match role {
        Role::Read => READ,
        Role::Edge => EDGE,
        Role::Write => WRITE,
        Role::Admin => ADMIN,
    }
}

/// The role each documented route needs (None: open), written down here
/// independently of the server's router.
fn required(method: &str, path: &str) -> Option<Option<Role>> {
    let role = match (method, path) {
        ("get", "/health") => None,
        ("post", "/get-online-features") => Some(Role::Read),
        ("get", "/metrics") => Some(Role::Read),
        ("get", p) if p.starts_with("/registry") => Some(Role::Read),
        ("get", "/transforms" | "/transforms/{name}") => Some(Role::Read),
        ("get", "/edge/bundle") => Some(Role::Edge),
        ("post", "/monitor/skew" | "/monitor/drift") => Some(Role::Read),
        (
            "post",
            "/push" | "/write-to-online-store" | "/materialize" | "/materialize-incremental",
        ) => Some(Role::Write),
        ("post", "/transforms/{name}" | "/transforms/{name}/rollback") => Some(Role::Admin),
        _ => return None,
    };
    Some(role)
}

fn start() -> (tempfile::TempDir, Server) {
    let project = cli::example_project();
    let config = project.path().join("wafer.yaml");
    let mut yaml = std::fs::read_to_string(&config).unwrap();
    assert!(!yaml.contains("server:"), "{yaml}");
    yaml.push_str(&format!(
        "server:\n  auth:\n    read_tokens: [{READ}, {BOTH}]\n    edge_tokens: [{EDGE}]\n    \
         write_tokens: [{WRITE}]\n    admin_tokens: [{ADMIN}, {BOTH}, \"  {PADDED}  \"]\n"
    ));
    std::fs::write(&config, yaml).unwrap();
    let server = Server::start(project.path(), &[]);
    (project, server)
}

fn call(server: &Server, method: &str, path: &str, authorization: Option<&str>) -> (u16, String) {
    let headers: Vec<(&str, &str)> = authorization
        .map(|value| ("Authorization", value))
        .into_iter()
        .collect();
    let body: &[u8] = if method == "POST" { b"{}" } else { b"" };
    http_with(server.address, method, path, &headers, body)
}

#[test]
fn every_route_needs_exactly_its_role() {
    let (_project, server) = start();
    let (status, document) = server.get("/openapi.json");
    assert_eq!(status, 200);
    let paths = document["paths"].as_object().expect("paths");
    let mut checked = 0;
    for (path, operations) in paths {
        for method in operations.as_object().unwrap().keys() {
            let need = required(method, path).unwrap_or_else(|| {
                panic!("{method} {path} is not in this test's table: add the role it needs")
            });
            let concrete = path
                .replace("{name}", "driver_hourly_stats")
                .replace("{version}", "1");
            let upper = method.to_ascii_uppercase();
            let status_with = |role: Option<Role>| {
                let header = role.map(|r| format!("Bearer {}", token(r)));
                call(&server, &upper, &concrete, header.as_deref())
            };
            let Some(need) = need else {
                let (status, body) = status_with(None);
                assert_eq!(status, 200, "{method} {path} is open: {body}");
                checked += 1;
                continue;
            };
            let (status, body) = status_with(None);
            assert_eq!(status, 401, "{method} {path} without a token: {body}");
            let (status, body) = call(&server, &upper, &concrete, Some("Bearer not-a-token-0123"));
            assert_eq!(status, 401, "{method} {path} with an unknown token: {body}");
            for role in [Role::Read, Role::Edge, Role::Write, Role::Admin] {
                let (status, body) = status_with(Some(role));
                if role < need {
                    assert_eq!(status, 403, "{method} {path} with a {role:?} token: {body}");
                    let json: Value = serde_json::from_str(&body).unwrap();
                    assert!(
                        json["message"].as_str().unwrap_or("").contains("role"),
                        "{body}"
                    );
                } else {
                    assert!(
                        status != 401 && status != 403,
                        "{method} {path} with a {role:?} token: {status} {body}"
                    );
                }
            }
            checked += 1;
        }
    }
    // Every operation documented today (a route removed from the document
    // fails here; one added must be added to the table above).
    assert_eq!(checked, 31, "documented operations");
}

#[test]
fn tokens_are_read_as_a_user_would_write_them() {
    let (_project, server) = start();
    let admin_only = "/transforms/nothing_here/rollback";
    // A token listed under two roles grants the higher.
    let (status, body) = call(&server, "POST", admin_only, Some(&format!("Bearer {BOTH}")));
    assert!(status != 401 && status != 403, "{status} {body}");
    // Spaces around a configured token are not part of it.
    let (status, body) = call(
        &server,
        "POST",
        admin_only,
        Some(&format!("Bearer {PADDED}")),
    );
    assert!(status != 401 && status != 403, "{status} {body}");
    // The scheme is accepted in lower case too, and spaces after it ignored.
    let (status, body) = call(&server, "GET", "/registry", Some(&format!("bearer {READ}")));
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        &server,
        "GET",
        "/registry",
        Some(&format!("Bearer   {READ} ")),
    );
    assert_eq!(status, 200, "{body}");
    // Anything else is no token at all.
    for header in [
        READ.to_string(),
        format!("Basic {READ}"),
        format!("Bearer{READ}"),
    ] {
        let (status, body) = call(&server, "GET", "/registry", Some(&header));
        assert_eq!(status, 401, "{header}: {body}");
    }
    // A prefix or an extension of a token is not the token.
    for presented in [&READ[..READ.len() - 1], &format!("{READ}0")] {
        let (status, body) = call(
            &server,
            "GET",
            "/registry",
            Some(&format!("Bearer {presented}")),
        );
        assert_eq!(status, 401, "{presented}: {body}");
    }
}
