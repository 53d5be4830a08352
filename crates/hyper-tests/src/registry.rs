//! A real docker-registry (Debian's distribution 2.8) on 127.0.0.1, optionally with htpasswd or token
//! authentication, and a token issuer for the latter.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;

use crate::{free_port, run, wait_until};

pub enum Auth {
    None,
    /// htpasswd with one user.
    Basic { user: String, password: String },
    /// Token auth with a token server run by the test.
    Token { user: String, password: String },
}

pub struct Registry {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
    _token: Option<TokenServer>,
}

impl Registry {
    pub fn start(auth: Auth) -> Registry {
        let dir = tempfile::Builder::new().prefix("registry-test-").tempdir().expect("tempdir");
        let port = free_port();
        let mut auth_cfg = String::new();
        let mut token = None;
        match &auth {
            Auth::None => {}
            Auth::Basic { user, password } => {
                let htpasswd = dir.path().join("htpasswd");
                let line = run(Command::new("htpasswd").args(["-Bbn", user, password]));
                std::fs::write(&htpasswd, line).expect("write htpasswd");
                auth_cfg = format!("auth:\n  htpasswd:\n    realm: hyper-test\n    path: {}\n", htpasswd.display());
            }
            Auth::Token { user, password } => {
                let t = TokenServer::start(dir.path(), user, password);
                auth_cfg = format!(
                    "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: hyper-test-registry\n    issuer: hyper-test-issuer\n    rootcertbundle: {}\n",
                    t.port,
                    t.cert.display()
                );
                token = Some(t);
            }
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{auth_cfg}",
            dir.path().join("data").display()
        );
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, config).expect("write registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn docker-registry (run scripts/setup.sh)");
        let ok = wait_until(Duration::from_secs(15), || TcpStream::connect(("127.0.0.1", port)).is_ok());
        assert!(ok, "docker-registry did not start: {}", std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default());
        Registry { dir, port, child, _token: token }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The file holding a blob in the registry's storage.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir.path().join("data/docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }

    /// Copies an OCI layout (every image in it, indexes included) into this registry with skopeo.
    pub fn push_layout(&self, layout: &Path, tag_in_layout: &str, dest: &str) {
        run(Command::new("skopeo").args([
            "copy",
            "--all",
            "--quiet",
            "--dest-tls-verify=false",
            &format!("oci:{}:{tag_in_layout}", layout.display()),
            &format!("docker://{}/{dest}", self.host()),
        ]));
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Issues registry bearer tokens (RS256 JWTs with an x5c chain) to one user, signing with `openssl`.
pub struct TokenServer {
    pub port: u16,
    pub cert: PathBuf,
    stop: Arc<AtomicBool>,
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

impl TokenServer {
    pub fn start(dir: &Path, user: &str, password: &str) -> TokenServer {
        let key = dir.join("token.key");
        let cert = dir.join("token.crt");
        run(Command::new("openssl").args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=hyper-test-issuer", "-keyout"]).arg(&key).arg("-out").arg(&cert));
        let der = Command::new("openssl").args(["x509", "-outform", "DER", "-in"]).arg(&cert).output().expect("openssl x509").stdout;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token server");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")));
        let user = user.to_string();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(mut s) = conn else { continue };
                let _ = handle_token_request(&mut s, &expected, &user, &key, &der);
            }
        });
        TokenServer { port, cert, stop }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn handle_token_request(s: &mut TcpStream, expected_auth: &str, user: &str, key: &Path, der: &[u8]) -> std::io::Result<()> {
    let mut r = BufReader::new(s.try_clone()?);
    let mut request_line = String::new();
    r.read_line(&mut request_line)?;
    let mut auth = None;
    loop {
        let mut l = String::new();
        r.read_line(&mut l)?;
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("authorization") {
                auth = Some(v.trim().to_string());
            }
        }
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
    let mut service = String::new();
    let mut scopes = Vec::new();
    for kv in query.split('&') {
        if let Some((k, v)) = kv.split_once('=') {
            let v = percent_decode(v);
            match k {
                "service" => service = v,
                "scope" => scopes.push(v),
                _ => {}
            }
        }
    }
    if auth.as_deref() != Some(expected_auth) {
        let body = r#"{"details":"invalid credentials"}"#;
        write!(s, "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
        return Ok(());
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let access: Vec<serde_json::Value> = scopes
        .iter()
        .filter_map(|sc| {
            let mut p = sc.splitn(3, ':');
            let (t, name, actions) = (p.next()?, p.next()?, p.next()?);
            Some(serde_json::json!({"type": t, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
        })
        .collect();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [base64::engine::general_purpose::STANDARD.encode(der)]});
    let claims = serde_json::json!({
        "iss": "hyper-test-issuer", "sub": user, "aud": service, "exp": now + 300, "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", std::process::id()), "access": access,
    });
    let signing_input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child.stdin.take().expect("stdin").write_all(signing_input.as_bytes())?;
    let mut sig = Vec::new();
    child.stdout.take().expect("stdout").read_to_end(&mut sig)?;
    child.wait()?;
    let token = format!("{signing_input}.{}", b64url(&sig));
    let body = serde_json::json!({"token": token, "expires_in": 300}).to_string();
    write!(s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())?;
    Ok(())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
