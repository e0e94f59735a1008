//! `HttpPayGateway::download_bill` on what the simulator never does: a `download_url` off
//! WeChat Pay's origin, and answers too large to hold (a plain-socket server, so the test
//! controls the bytes on the wire). The signed flow itself runs against the simulator
//! (`sandbox/tests/bills.rs`).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use shared::wechatpay::{
    ApiV3Key, BillLocation, GatewaySettings, HttpPayGateway, PayError, PayGateway, RsaPrivateKey,
    RsaPublicKey,
    client::{CERTIFICATE_MAX_AGE, MAX_BILL_DOWNLOAD},
};

fn pem(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../testdata/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("test key")
}

fn gateway(api_base: &str) -> HttpPayGateway {
    HttpPayGateway::new(GatewaySettings {
        api_base: api_base.into(),
        appid: "wx2421b1c4370ec43b".into(),
        mchid: "1900007291".into(),
        mch_serial_no: "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB".into(),
        mch_private_key: Some(
            RsaPrivateKey::from_pkcs8_pem(&pem("test_merchant_key.pem")).unwrap(),
        ),
        apiv3_key: ApiV3Key::new("a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb").unwrap(),
        public_key: Some((
            "PUB_KEY_ID_0000000000000024101100397200000006".into(),
            RsaPublicKey::from_spki_pem(&pem("test_platform_public.pem")).unwrap(),
        )),
        notify_url: None,
        retry: Default::default(),
        certificate_refresh_interval: Duration::from_secs(60),
        certificate_max_age: CERTIFICATE_MAX_AGE,
    })
    .unwrap()
}

fn at(download_url: &str) -> BillLocation {
    BillLocation {
        hash_type: "SHA1".into(),
        hash_value: "0".repeat(40),
        download_url: download_url.into(),
    }
}

/// The merchant's signature goes to WeChat Pay only: never to another host, nor over plain
/// http to a WeChat one.
#[tokio::test]
async fn a_download_url_off_wechat_pays_origin_is_refused_unsent() {
    let gw = gateway("http://127.0.0.1:9");
    for url in [
        "https://evil.example.com/v3/billdownload/file?token=x",
        "https://api.mch.weixin.qq.com.evil.example.com/v3/billdownload/file?token=x",
        "http://api.mch.weixin.qq.com/v3/billdownload/file?token=x",
        "http://127.0.0.1:10/v3/billdownload/file?token=x",
        "not a url",
    ] {
        let e = gw.download_bill(&at(url)).await.unwrap_err();
        assert!(
            matches!(&e, PayError::MalformedResponse(m) if m.contains("download_url")),
            "{url}: {e:?}"
        );
    }
}

/// Serves one HTTP/1.1 answer: `head` then `body_chunks` chunks of 1 MiB (chunked when
/// `chunked`), until the client hangs up.
fn serve_once(head: &'static str, chunked: bool, body_chunks: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
            line.clear();
        }
        let mut stream = stream;
        if stream.write_all(head.as_bytes()).is_err() {
            return;
        }
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..body_chunks {
            let written = if chunked {
                write!(stream, "{:x}\r\n", chunk.len())
                    .and_then(|()| stream.write_all(&chunk))
                    .and_then(|()| stream.write_all(b"\r\n"))
            } else {
                stream.write_all(&chunk)
            };
            if written.is_err() {
                return; // the client stopped reading: what the test wants
            }
        }
    });
    addr
}

#[tokio::test]
async fn a_download_larger_than_the_bound_is_refused() {
    let limit_mib = usize::try_from(MAX_BILL_DOWNLOAD >> 20).unwrap();
    // Announced too large: refused before the body is read.
    let head = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            MAX_BILL_DOWNLOAD + 1
        )
        .into_boxed_str(),
    );
    let addr = serve_once(head, false, 1);
    let base = format!("http://{addr}");
    let e = gateway(&base)
        .download_bill(&at(&format!("{base}/v3/billdownload/file?token=t")))
        .await
        .unwrap_err();
    assert!(
        matches!(e, PayError::BillTooLarge(MAX_BILL_DOWNLOAD)),
        "{e:?}"
    );

    // Chunked without a length: cut off once past the bound.
    let addr = serve_once(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        true,
        limit_mib + 2,
    );
    let base = format!("http://{addr}");
    let e = gateway(&base)
        .download_bill(&at(&format!("{base}/v3/billdownload/file?token=t")))
        .await
        .unwrap_err();
    assert!(
        matches!(e, PayError::BillTooLarge(MAX_BILL_DOWNLOAD)),
        "{e:?}"
    );
}
