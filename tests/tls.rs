//! TLS to the router: certificates made here (a test CA, a server and a
//! client certificate); the Rust driver and pymongo connect with `tls=true`;
//! where client certificates are required a client without one is refused,
//! and a plain client is told TLS is required; `preferTLS` serves both.

mod support;

use std::path::{Path, PathBuf};

use bson::{doc, Document};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use shardgate_router::{RouterConfig, TlsConfig, TlsMode};
use support::{admin, RawConn, RouterHandle};

struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    /// Client certificate and key in one file (`tlsCertificateKeyFile`).
    client: PathBuf,
}

fn make_pki(dir: &Path) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "shardgate test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let mut server_params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = server_params.signed_by(&server_key, &ca, &ca_key).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(vec!["client".to_owned()]).unwrap();
    client_params
        .distinguished_name
        .push(DnType::CommonName, "test client");
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = client_params.signed_by(&client_key, &ca, &ca_key).unwrap();

    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    Pki {
        ca: write("ca.pem", ca.pem()),
        server_cert: write("server.pem", server.pem()),
        server_key: write("server.key", server_key.serialize_pem()),
        client: write(
            "client.pem",
            format!("{}{}", client.pem(), client_key.serialize_pem()),
        ),
    }
}

async fn tls_router(
    dir: &Path,
    pki: &Pki,
    mode: TlsMode,
    require_client_cert: bool,
) -> RouterHandle {
    let config = RouterConfig {
        balancer: false,
        tls: TlsConfig {
            mode,
            cert_file: Some(pki.server_cert.display().to_string()),
            key_file: Some(pki.server_key.display().to_string()),
            ca_file: require_client_cert.then(|| pki.ca.display().to_string()),
        },
        ..Default::default()
    };
    RouterHandle::start(&dir.join(format!("config-{mode:?}")), config).await
}

async fn driver(uri: &str) -> mongodb::Client {
    let mut opts = mongodb::options::ClientOptions::parse(uri).await.unwrap();
    opts.server_selection_timeout = Some(std::time::Duration::from_secs(3));
    mongodb::Client::with_options(opts).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drivers_connect_over_tls_and_clients_without_a_certificate_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let shards = support::start_shards(dir.path(), 1, false).await;
    let router = tls_router(dir.path(), &pki, TlsMode::Require, true).await;
    let uri = format!(
        "mongodb://127.0.0.1:{}/?tls=true&tlsCAFile={}&tlsCertificateKeyFile={}",
        router.addr.port(),
        pki.ca.display(),
        pki.client.display()
    );
    let client = driver(&uri).await;
    admin(&client, doc! {"addShard": shards[0].address()}).await;
    let coll = client.database("secure").collection::<Document>("c");
    coll.insert_one(doc! {"_id": 1, "v": "over TLS"})
        .await
        .unwrap();
    let got = coll.find_one(doc! {"_id": 1}).await.unwrap().unwrap();
    assert_eq!(got.get_str("v").unwrap(), "over TLS");

    // No client certificate: the handshake is refused.
    let no_cert = driver(&format!(
        "mongodb://127.0.0.1:{}/?tls=true&tlsCAFile={}",
        router.addr.port(),
        pki.ca.display()
    ))
    .await;
    let e = no_cert
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .unwrap_err();
    println!("without a client certificate: {e}");

    // A plain client is told TLS is required.
    let mut plain = RawConn::connect(router.addr).await;
    let reply = plain.command(doc! {"hello": 1, "$db": "admin"}).await;
    assert!(
        reply
            .get_str("errmsg")
            .unwrap_or("")
            .contains("requires TLS"),
        "{reply}"
    );

    // pymongo with the same certificates.
    let out = support::pymongo(
        &uri,
        r#"
import os
from pymongo import MongoClient
c = MongoClient(os.environ["URI"], serverSelectionTimeoutMS=5000)
print(c.secure.c.find_one({"_id": 1})["v"])
"#,
    );
    assert_eq!(out.trim(), "over TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_tls_serves_tls_and_plain_clients() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let router = tls_router(dir.path(), &pki, TlsMode::Prefer, false).await;
    let tls = driver(&format!(
        "mongodb://127.0.0.1:{}/?tls=true&tlsCAFile={}",
        router.addr.port(),
        pki.ca.display()
    ))
    .await;
    tls.database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .unwrap();
    let plain = driver(&router.uri()).await;
    plain
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .unwrap();
}

/// A SecantusDB server that only speaks TLS, killed on drop.
struct TlsShard {
    child: std::process::Child,
    port: u16,
}

impl Drop for TlsShard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_reached_over_tls_works() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path());
    let launcher = shardgate::shard_process::ShardLauncher::from_env().unwrap();
    let port = shardgate::shard_process::free_port().unwrap();
    let log = std::fs::File::create(dir.path().join("tls-shard.log")).unwrap();
    let data = dir.path().join("tls-shard");
    let mut cmd = std::process::Command::new(&launcher.bin);
    match launcher.kind {
        shardgate::shard_process::ShardKind::Secantus => {
            cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .arg("--storage-path")
                .arg(&data)
                .arg("--tls-cert-file")
                .arg(&pki.server_cert)
                .arg("--tls-key-file")
                .arg(&pki.server_key);
        }
        shardgate::shard_process::ShardKind::Mongod => {
            // mongod wants certificate and key in one file.
            let combined = dir.path().join("server-combined.pem");
            let text = std::fs::read_to_string(&pki.server_cert).unwrap()
                + &std::fs::read_to_string(&pki.server_key).unwrap();
            std::fs::write(&combined, text).unwrap();
            std::fs::create_dir_all(&data).unwrap();
            cmd.args(["--bind_ip", "127.0.0.1", "--port", &port.to_string()])
                .arg("--dbpath")
                .arg(&data)
                .args(["--tlsMode", "requireTLS", "--tlsCertificateKeyFile"])
                .arg(&combined);
        }
    }
    let child = cmd
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let shard = TlsShard { child, port };
    let direct = driver(&format!(
        "mongodb://127.0.0.1:{}/?directConnection=true&tls=true&tlsCAFile={}",
        shard.port,
        pki.ca.display()
    ))
    .await;
    let mut up = false;
    for _ in 0..60 {
        if direct
            .database("admin")
            .run_command(doc! {"ping": 1})
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(up, "the TLS shard came up");

    // A router without shard TLS cannot add it; one with the CA can.
    let plain = RouterHandle::start(
        &dir.path().join("config-plain"),
        RouterConfig {
            balancer: false,
            pool: shardgate_router::PoolConfig {
                connect_timeout_ms: 2_000,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    let e = driver(&plain.uri())
        .await
        .database("admin")
        .run_command(doc! {"addShard": format!("127.0.0.1:{}", shard.port)})
        .await
        .unwrap_err();
    println!("without shard TLS: {e}");
    let router = RouterHandle::start(
        &dir.path().join("config-tls"),
        RouterConfig {
            balancer: false,
            pool: shardgate_router::PoolConfig {
                tls: Some(shardgate_router::ShardTls {
                    ca_file: pki.ca.display().to_string(),
                    cert_key_file: None,
                }),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    let client = driver(&router.uri()).await;
    admin(
        &client,
        doc! {"addShard": format!("127.0.0.1:{}", shard.port)},
    )
    .await;
    let coll = client.database("tlsdb").collection::<Document>("c");
    coll.insert_many((0..100).map(|i| doc! {"_id": i}))
        .await
        .unwrap();
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 100);
    assert_eq!(
        direct
            .database("tlsdb")
            .collection::<Document>("c")
            .count_documents(doc! {})
            .await
            .unwrap(),
        100,
        "the documents are on the TLS shard"
    );
}
