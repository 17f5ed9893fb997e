//! What the fuzz targets share: a runtime, a scratch directory, an issuer.

use std::path::PathBuf;

use tessera_token::{IssuerKey, Jwks};

/// A runtime for the targets that drive async code, built once per process.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A fresh directory for `name` in this process, on tmpfs when there is one
/// (the store and the agent flush every write).
pub fn scratch_dir(name: &str) -> PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("tessera-fuzz-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// An issuing account's key and the JWKS that trusts it.
pub fn issuer() -> (IssuerKey, Jwks) {
    let key = IssuerKey::generate("111111111111");
    let jwks = Jwks {
        keys: vec![key.public_jwk()],
    };
    (key, jwks)
}
