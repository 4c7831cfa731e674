//! Git repositories for the tests, made with the real `git` (a fixed identity and branch,
//! no signing, whatever the machine's configuration).

#![allow(dead_code)] // each suite uses part of this module

use std::path::Path;
use std::process::Command;

use crate::net::{free_port, wait_for_port};

/// Runs `git ARGS` in `dir`, insisting on success; returns its trimmed stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Pequod Tests",
            "-c",
            "user.email=tests@pequod.invalid",
        ])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git is installed");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Copies a directory tree.
pub fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("directory");
    for entry in std::fs::read_dir(from).expect("readable") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copied");
        }
    }
}

/// How long a Git server may take to listen.
const START_LIMIT: std::time::Duration = std::time::Duration::from_secs(20);

/// A server's log, for a failure message.
fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Runs a setup command, insisting on success.
fn run(command: &mut Command) {
    let out = command.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A new ed25519 key pair at `path` (and `path.pub`).
pub fn key_pair(path: &Path) {
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", ""])
        .arg("-f")
        .arg(path));
}

/// OpenSSH's `sshd` on a loopback port (Debian package `openssh-server`), accepting one
/// client key for the user running the tests: repositories are `ssh://USER@127.0.0.1:PORT/`
/// followed by their absolute path.
pub struct SshServer {
    /// The port.
    pub port: u16,
    /// The user to log in as.
    pub user: String,
    /// The client's private key (OpenSSH format).
    pub client_key: String,
    /// A `known_hosts` line for the server.
    pub known_hosts: String,
    child: std::process::Child,
}

impl SshServer {
    /// Starts sshd with its keys and configuration in `dir`.
    pub fn start(dir: &Path) -> SshServer {
        std::fs::create_dir_all(dir).expect("sshd directory");
        key_pair(&dir.join("host_key"));
        key_pair(&dir.join("client_key"));
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys"))
            .expect("authorized_keys");
        // sshd's privilege separation directory, made by the service unit on a real host.
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let port = free_port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\n\
                 AuthorizedKeysFile {dir}/authorized_keys\nPidFile {dir}/sshd.pid\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\nPermitRootLogin prohibit-password\n",
                dir = dir.display()
            ),
        )
        .expect("sshd_config");
        let log = dir.join("sshd.log");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("sshd log"))
            .spawn()
            .expect("sshd starts (Debian package openssh-server)");
        wait_for_port(port, START_LIMIT, "sshd", || read_log(&log));
        let host_key = std::fs::read_to_string(dir.join("host_key.pub")).expect("host key");
        let host_key: Vec<&str> = host_key.split_whitespace().take(2).collect();
        SshServer {
            port,
            user: whoami(),
            client_key: std::fs::read_to_string(dir.join("client_key")).expect("client key"),
            known_hosts: format!("[127.0.0.1]:{port} {}\n", host_key.join(" ")),
            child,
        }
    }

    /// The URL of the repository at `path`.
    pub fn url(&self, path: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            path.display()
        )
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The user running the tests.
fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().expect("id runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// lighttpd (Debian packages `lighttpd`, `lighttpd-mod-openssl`) running `git http-backend`
/// for the repositories under a directory, behind HTTP basic auth, on two loopback ports:
/// HTTPS with a self-signed certificate for 127.0.0.1, and plain HTTP.
pub struct HttpServer {
    /// The HTTPS port.
    pub https_port: u16,
    /// The plain HTTP port.
    pub http_port: u16,
    /// The certificate clients must trust (PEM).
    pub certificate: std::path::PathBuf,
    child: std::process::Child,
}

impl HttpServer {
    /// Serves the repositories under `base` to `user`:`password`; its files live in `dir`.
    pub fn start(dir: &Path, base: &Path, user: &str, password: &str) -> HttpServer {
        std::fs::create_dir_all(dir.join("www")).expect("lighttpd directory");
        let certificate = dir.join("cert.pem");
        let key = dir.join("key.pem");
        run(Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args([
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&certificate));
        let mut pem = std::fs::read_to_string(&certificate).expect("certificate");
        pem.push_str(&std::fs::read_to_string(&key).expect("key"));
        std::fs::write(dir.join("server.pem"), pem).expect("server.pem");
        run(Command::new("htpasswd")
            .args(["-b", "-c", "-m"])
            .arg(dir.join("htpasswd"))
            .args([user, password]));
        let (https_port, http_port) = (free_port(), free_port());
        let config = dir.join("lighttpd.conf");
        std::fs::write(
            &config,
            format!(
                r#"server.modules = ("mod_alias", "mod_auth", "mod_authn_file", "mod_cgi", "mod_setenv", "mod_openssl")
server.document-root = "{dir}/www"
server.bind = "127.0.0.1"
server.port = {https_port}
server.errorlog = "{dir}/error.log"
ssl.engine = "enable"
ssl.pemfile = "{dir}/server.pem"
$SERVER["socket"] == "127.0.0.1:{http_port}" {{
  ssl.engine = "disable"
}}
alias.url = ("/git" => "/usr/lib/git-core/git-http-backend")
$HTTP["url"] =~ "^/git" {{
  cgi.assign = ("" => "")
  setenv.add-environment = ("GIT_PROJECT_ROOT" => "{base}", "GIT_HTTP_EXPORT_ALL" => "1")
}}
auth.backend = "htpasswd"
auth.backend.htpasswd.userfile = "{dir}/htpasswd"
auth.require = ("/git" => ("method" => "basic", "realm" => "git", "require" => "valid-user"))
"#,
                dir = dir.display(),
                base = base.display(),
            ),
        )
        .expect("lighttpd.conf");
        let log = dir.join("lighttpd.log");
        let child = Command::new("/usr/sbin/lighttpd")
            .arg("-D")
            .arg("-f")
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&log).expect("lighttpd log"))
            .stderr(std::fs::File::create(dir.join("lighttpd.stderr")).expect("log"))
            .spawn()
            .expect("lighttpd starts (Debian packages lighttpd, lighttpd-mod-openssl)");
        let log = dir.join("lighttpd.stderr");
        for port in [https_port, http_port] {
            wait_for_port(port, START_LIMIT, "lighttpd", || read_log(&log));
        }
        HttpServer {
            https_port,
            http_port,
            certificate,
            child,
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
