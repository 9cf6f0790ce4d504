//! TLS (mutual) and the shared token on a real run: the right credentials evaluate, and a
//! client with a wrong token, no token, no TLS or no client certificate is refused; the
//! token never appears in any log.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Guard, shared, sibling, worker_command};

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

const TOKEN: &str = "s3cr3t-token-4f9a1c";

/// A CA, a certificate for 127.0.0.1/localhost signed by it, and a client certificate.
fn certificates(dir: &Path) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
    let issuer = rcgen::Issuer::new(ca, ca_key);
    for (name, sans) in [
        (
            "server",
            vec!["localhost".to_string(), "127.0.0.1".to_string()],
        ),
        ("client", vec!["amos-coordinator".to_string()]),
    ] {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(sans)
            .expect("params")
            .signed_by(&key, &issuer)
            .expect("certificate");
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).expect("write cert");
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("write key");
    }
    std::fs::write(dir.join("ca.crt"), ca_cert.pem()).expect("write CA");
    std::fs::write(dir.join("token"), TOKEN).expect("write token");
    std::fs::write(dir.join("wrong-token"), "not-the-token").expect("write token");
}

fn start_worker(dir: &Path, log: &Path) -> (Guard, String) {
    let mut cmd = worker_command();
    cmd.arg("--tls-cert")
        .arg(dir.join("server.crt"))
        .arg("--tls-key")
        .arg(dir.join("server.key"))
        .arg("--tls-ca")
        .arg(dir.join("ca.crt"))
        .arg("--token-file")
        .arg(dir.join("token"))
        .env("RUST_LOG", "debug")
        .stderr(std::fs::File::create(log).expect("log file"));
    common::start_worker(cmd)
}

#[test]
fn tls_and_token_are_required() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("security");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    certificates(&dir);
    let model = dir.join("model.amos");
    let data = shared().join("data/cifar10-test2000");
    let out = Command::new(sibling("amos-convert"))
        .arg("convert")
        .arg(shared().join("models/cifar10_swish_se.onnx"))
        .arg("-o")
        .arg(&model)
        .args(["--preset", "cifar", "--calibration"])
        .arg(&data)
        .args(["--calibration-images", "32"])
        .args(["--fit-steps", "200", "--fit-samples", "4096"])
        .output()
        .expect("convert");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (_w0, a0) = start_worker(&dir, &dir.join("worker0.log"));
    let (_w1, a1) = start_worker(&dir, &dir.join("worker1.log"));
    // Addresses by IP: the server certificate names 127.0.0.1.
    let workers = format!("https://{a0},https://{a1}");
    let run = |name: &str, args: &[&str]| -> Output {
        Command::new(env!("CARGO_BIN_EXE_amos-coordinator"))
            .args(["run", "--model"])
            .arg(&model)
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(dir.join(format!("out-{name}")))
            .args(["--workers", &workers, "--stages", "2", "--limit", "8"])
            .args([
                "--quiet",
                "--json",
                "--max-attempts",
                "1",
                "--connect-timeout-s",
                "3",
            ])
            .args(args)
            .env("RUST_LOG", "debug")
            .env_remove(amos_worker::security::TOKEN_ENV)
            .output()
            .expect("run coordinator")
    };
    let ca = dir.join("ca.crt");
    let (cert, key) = (dir.join("client.crt"), dir.join("client.key"));
    let (ca, cert, key) = (
        ca.to_str().expect("path"),
        cert.to_str().expect("path"),
        key.to_str().expect("path"),
    );
    let token = dir.join("token");
    let wrong = dir.join("wrong-token");
    let (token, wrong) = (token.to_str().expect("path"), wrong.to_str().expect("path"));

    // The right CA, client certificate and token: a complete run.
    let good = run(
        "good",
        &[
            "--tls-ca",
            ca,
            "--tls-cert",
            cert,
            "--tls-key",
            key,
            "--token-file",
            token,
        ],
    );
    let stdout = String::from_utf8_lossy(&good.stdout);
    assert!(
        good.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let outcome: serde_json::Value = serde_json::from_str(&stdout).expect("outcome");
    assert_eq!(outcome["images_run"], 8, "{outcome}");
    let mut logs = String::from_utf8_lossy(&good.stderr).into_owned();

    // Refused: a wrong token, no token, no client certificate, no TLS.
    let refused: [(&str, Vec<&str>, &str); 4] = [
        (
            "wrong-token",
            vec![
                "--tls-ca",
                ca,
                "--tls-cert",
                cert,
                "--tls-key",
                key,
                "--token-file",
                wrong,
            ],
            "wrong token",
        ),
        (
            "no-token",
            vec!["--tls-ca", ca, "--tls-cert", cert, "--tls-key", key],
            "wrong token",
        ),
        (
            "no-client-cert",
            vec!["--tls-ca", ca, "--token-file", token],
            "",
        ),
        ("plaintext", vec!["--token-file", token], ""),
    ];
    for (name, args, message) in refused {
        let o = run(name, &args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success(),
            "{name}: a run without the right credentials must fail"
        );
        assert!(err.contains(message), "{name}: {err}");
        let shards = dir.join(format!("out-{name}")).join("shards");
        assert!(
            !shards.exists()
                || std::fs::read_dir(&shards)
                    .map(|d| d.count() == 0)
                    .unwrap_or(true),
            "{name}: nothing may be evaluated"
        );
        logs.push_str(&err);
    }
    for log in ["worker0.log", "worker1.log"] {
        logs.push_str(&std::fs::read_to_string(dir.join(log)).expect("worker log"));
    }
    assert!(!logs.contains(TOKEN), "the token appears in a log");
}
