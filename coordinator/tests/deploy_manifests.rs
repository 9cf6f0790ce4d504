//! The Kubernetes manifests in `deploy/k8s`: rendered by `kubectl kustomize`, validated
//! strictly against the Kubernetes API schemas (`kubernetes-validate`) and checked for what
//! schemas miss (`tests/deploy/check_manifests.py`); broken copies must be caught.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn check(dirs: &[&Path]) -> Output {
    Command::new("python3")
        .arg(repo().join("tests/deploy/check_manifests.py"))
        .args(dirs)
        .output()
        .expect("run python3 tests/deploy/check_manifests.py")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).expect("copy");
        }
    }
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).expect("read manifest");
    assert!(text.contains(from), "{} lacks {from:?}", path.display());
    std::fs::write(path, text.replace(from, to)).expect("write manifest");
}

#[test]
fn manifests_render_and_validate() {
    let out = check(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("deploy/k8s/base: 5 objects valid"),
        "{stdout}"
    );
    assert!(
        stdout.contains("deploy/k8s/overlays/b7-imagenet-s3: 6 objects valid"),
        "{stdout}"
    );
}

#[test]
fn broken_manifests_are_caught() {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR")).join("k8s-broken");
    let _ = std::fs::remove_dir_all(&tmp);
    copy_dir(&repo().join("deploy/k8s"), &tmp);
    let base = tmp.join("base");
    edit(
        &base.join("kustomization.yaml"),
        "newTag: 0.1.0",
        "newTag: latest",
    );
    edit(
        &base.join("worker-statefulset.yaml"),
        "  serviceName: amos-worker",
        "  serviceName: amos-worker\n  replica: 3",
    );
    edit(
        &base.join("worker-statefulset.yaml"),
        "            grpc:\n              port: 8081\n            periodSeconds: 5",
        "            grpc:\n              port: 50052\n            periodSeconds: 5",
    );
    edit(
        &base.join("coordinator-job.yaml"),
        "            - --tls-ca=/etc/amos/tls/ca.crt",
        "            - --tls-ca=/tmp/ca.crt",
    );
    edit(
        &tmp.join("overlays/b7-imagenet-s3/run-settings.yaml"),
        "amos-worker-15.amos-worker:50051",
        "amos-worker-15.amos-worker:9090",
    );
    let out = check(&[&base, &tmp.join("overlays/b7-imagenet-s3")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    for expected in [
        "has no pinned tag",
        "schema:",
        "readinessProbe port 50052 is not a container port",
        "worker 15 address 'amos-worker-15.amos-worker:9090'",
        "--tls-ca=/tmp/ca.crt is not in a mounted Secret",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}

#[test]
fn dockerfile_passes_hadolint() {
    let out = Command::new("hadolint")
        .arg(repo().join("deploy/Dockerfile"))
        .output()
        .expect("run hadolint (pip install -r tests/requirements.txt)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(repo().join("deploy/Dockerfile")).expect("Dockerfile");
    // A slim runtime stage without build tools, running as a non-root user.
    let runtime = text.split("AS runtime").nth(1).expect("a runtime stage");
    assert!(runtime.contains("USER 10001"), "non-root user");
    for tool in ["cargo", "rustc", "gcc", "build-essential"] {
        assert!(!runtime.contains(tool), "{tool} in the runtime stage");
    }
}
