//! nginx (Debian package, installed by `.ci/setup`) running the example configuration in
//! `tests/fixtures/deploy/nginx.conf` in front of two bedside replicas, its ports and paths
//! moved into a test folder.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::process::free_port;

/// nginx with the example configuration, its ports and paths moved into `dir`; stopped on drop.
pub struct Nginx {
    /// Where the load balancer listens.
    pub url: String,
    child: Child,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    pub fn start(dir: &Path, replicas: [u16; 2]) -> Self {
        Self::start_logging(dir, replicas, false)
    }

    /// With `access_log`: one line per request, `status upstream_addr` (a retried request
    /// names both replicas).
    pub fn start_logging(dir: &Path, replicas: [u16; 2], access_log: bool) -> Self {
        let port = free_port();
        let example =
            std::fs::read_to_string(super::repo().join("tests/fixtures/deploy/nginx.conf"))
                .unwrap();
        let conf = example
            .replace("127.0.0.1:8080", &format!("127.0.0.1:{}", replicas[0]))
            .replace("127.0.0.1:8090", &format!("127.0.0.1:{}", replicas[1]))
            .replace("127.0.0.1:8000", &format!("127.0.0.1:{port}"))
            .replace(
                "/run/nginx-bedside.pid",
                &dir.join("nginx.pid").display().to_string(),
            )
            .replace(
                "/var/log/nginx/bedside-error.log",
                &dir.join("error.log").display().to_string(),
            );
        assert_ne!(conf, example);
        let conf = if access_log {
            conf.replace(
                "access_log off;",
                &format!(
                    "log_format upstreams '$status $upstream_addr';\n    access_log {} upstreams;",
                    dir.join("access.log").display()
                ),
            )
        } else {
            conf
        };
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new("/usr/sbin/nginx")
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&path)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx (Debian package, installed by .ci/setup)");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "nginx did not start: {}",
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            url: format!("http://127.0.0.1:{port}"),
            child,
        }
    }
}
