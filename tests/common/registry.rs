//! A real OCI registry for the tests: the Debian `docker-registry` (distribution) on a
//! loopback port, with its storage in a temporary directory, optionally behind htpasswd.

#![allow(dead_code)] // each suite uses part of this module

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::net::{free_port, wait_for_port};

/// A running registry; stopped when dropped.
pub struct TestRegistry {
    /// `127.0.0.1:PORT`.
    pub host: String,
    child: Child,
    dir: tempfile::TempDir,
}

/// The credentials of a registry started with [`TestRegistry::with_auth`].
pub const USER: &str = "pequod";
/// The password of [`USER`].
pub const PASSWORD: &str = "s3cret-pw";

impl TestRegistry {
    /// An open registry.
    pub fn start() -> TestRegistry {
        TestRegistry::launch(false)
    }

    /// A registry that wants [`USER`] and [`PASSWORD`] (HTTP basic, htpasswd bcrypt).
    pub fn with_auth() -> TestRegistry {
        TestRegistry::launch(true)
    }

    fn launch(auth: bool) -> TestRegistry {
        let dir = tempfile::tempdir().expect("temporary directory");
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog: {{level: info, accesslog: {{disabled: false}}}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\nhttp:\n  addr: {host}\n",
            dir.path().join("data").display()
        );
        if auth {
            let htpasswd = Command::new("htpasswd")
                .args(["-Bbn", USER, PASSWORD])
                .output()
                .expect("htpasswd (Debian package apache2-utils) is installed");
            std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout).expect("htpasswd file");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: pequod-test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log file");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("docker-registry (Debian package docker-registry) is installed");
        let registry = TestRegistry { host, child, dir };
        wait_for_port(port, Duration::from_secs(30), "the registry", || {
            registry.log()
        });
        registry
    }

    /// What the registry logged (its access log included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// How many blobs of `repository` the registry served (its access log's 200 GETs).
    pub fn blob_pulls(&self, repository: &str) -> usize {
        let request = format!("\"GET /v2/{repository}/blobs/");
        self.log()
            .lines()
            .filter(|line| line.contains(&request) && line.contains(" 200 "))
            .count()
    }

    /// A docker config file with the credentials of [`USER`] for this registry.
    pub fn docker_config(&self, path: &Path) {
        use base64::Engine;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
        let config = serde_json::json!({"auths": {self.host.clone(): {"auth": auth}}});
        std::fs::write(path, config.to_string()).expect("docker config written");
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
