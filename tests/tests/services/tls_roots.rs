//! The functions' HTTPS clients trust the compiled-in roots and `SSL_CERT_FILE`, nothing read
//! from the system store: a real TLS server with a self-signed certificate is refused by the
//! bundled roots alone and accepted once the file names it, for reqwest (WeChat Pay, WeChat
//! login) and for the AWS SDK's client (DynamoDB, Secrets Manager).

use std::{
    io::{Read, Write},
    net::TcpListener,
    sync::{Arc, Mutex},
};

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use shared::{
    config::{Env, Secret},
    session::{HttpWxLogin, LoginCode, LoginSettings, WxLogin},
    store::{AwsAccess, ClientSettings, sdk_config},
    tls::{self, TrustRoots},
};

const CERT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../testdata/tls/localhost_cert.pem"
);
const KEY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../testdata/tls/localhost_key.pem"
);

/// An HTTPS server on 127.0.0.1 with the test certificate, answering every request with
/// `body` (as `content_type`) and recording each request line it got past the handshake.
struct TlsServer {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

fn start_server(content_type: &'static str, body: &'static str) -> TlsServer {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs = CertificateDer::pem_file_iter(CERT)
        .expect("cert file")
        .collect::<Result<Vec<_>, _>>()
        .expect("cert");
    let key = PrivateKeyDer::from_pem_file(KEY).expect("key");
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config"),
    );
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().expect("addr").port()
    );
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let config = config.clone();
            let seen = seen.clone();
            std::thread::spawn(move || {
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(conn, stream);
                // A client that refuses the certificate ends the handshake here.
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head);
                let line = text.lines().next().unwrap_or_default().to_owned();
                seen.lock().expect("lock").push(line);
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes());
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    TlsServer { url, requests }
}

fn with_cert_file() -> TrustRoots {
    TrustRoots::from_env(&Env::from_pairs([("SSL_CERT_FILE", CERT)])).expect("SSL_CERT_FILE")
}

#[tokio::test]
async fn reqwest_clients_trust_the_bundled_roots_and_ssl_cert_file_only() {
    let server = start_server("text/plain", "hello");
    let bundled = TrustRoots::bundled()
        .reqwest_builder()
        .build()
        .expect("client");
    let err = bundled
        .get(&server.url)
        .send()
        .await
        .expect_err("a self-signed certificate is not trusted");
    assert!(err.is_connect(), "{err:?}");
    assert!(
        format!("{err:?}").contains("UnknownIssuer"),
        "refused for its issuer: {err:?}"
    );
    assert!(server.requests.lock().expect("lock").is_empty());

    let trusting = with_cert_file().reqwest_builder().build().expect("client");
    let answer = trusting.get(&server.url).send().await.expect("trusted");
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.expect("body"), "hello");
    assert_eq!(server.requests.lock().expect("lock").len(), 1);
}

fn dynamodb(url: &str, roots: &TrustRoots) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(roots.aws_http_client())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("AKIDTEST", "secret", None, None, "test"))
            .endpoint_url(url)
            .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
            .build(),
    )
}

#[tokio::test]
async fn the_aws_sdk_client_trusts_the_bundled_roots_and_ssl_cert_file_only() {
    let server = start_server("application/x-amz-json-1.0", r#"{"TableNames":["orders"]}"#);
    let err = dynamodb(&server.url, &TrustRoots::bundled())
        .list_tables()
        .send()
        .await
        .expect_err("a self-signed certificate is not trusted");
    let shown = format!("{}", aws_sdk_dynamodb::error::DisplayErrorContext(&err));
    assert!(shown.contains("UnknownIssuer"), "{shown}");
    assert!(server.requests.lock().expect("lock").is_empty());

    let tables = dynamodb(&server.url, &with_cert_file())
        .list_tables()
        .send()
        .await
        .expect("trusted");
    assert_eq!(tables.table_names(), ["orders"]);
    assert_eq!(
        server.requests.lock().expect("lock").as_slice(),
        ["POST / HTTP/1.1"]
    );
}

/// What the functions build (`sdk_config`, the login and WeChat Pay clients) uses the roots
/// installed at start-up. The only test here that installs: the others pass roots explicitly.
#[tokio::test]
async fn clients_built_after_install_use_the_installed_roots() {
    assert!(
        tls::install(with_cert_file()),
        "installed before any client"
    );
    assert_eq!(tls::roots().len(), TrustRoots::bundled().len() + 1);

    let aws = start_server("application/x-amz-json-1.0", r#"{"TableNames":[]}"#);
    let access = AwsAccess {
        region: Some("us-east-1".into()),
        credentials: Some(("AKIDTEST".into(), "secret".into(), None)),
    };
    let config = sdk_config(Some(&aws.url), &access, &ClientSettings::default()).await;
    let tables = aws_sdk_dynamodb::Client::new(&config)
        .list_tables()
        .send()
        .await
        .expect("the installed roots trust the test server");
    assert!(tables.table_names().is_empty());

    let wechat = start_server(
        "application/json",
        r#"{"openid":"o_tls","session_key":"k"}"#,
    );
    let login = HttpWxLogin::new(LoginSettings {
        api_base: wechat.url.clone(),
        appid: "wx0123456789abcdef".into(),
        app_secret: Secret::new("s".into()),
        retry: LoginSettings::default_retry(),
    })
    .expect("login client");
    let openid = login
        .jscode2session(&LoginCode::parse("code").expect("code"))
        .await
        .expect("login over TLS");
    assert_eq!(openid.as_str(), "o_tls");
    assert!(
        wechat.requests.lock().expect("lock")[0].starts_with("GET /sns/jscode2session?"),
        "{:?}",
        wechat.requests
    );
}
