//! WeChat's message push to the mini-program's server (消息推送) in safe mode, as mp-push
//! receives it (DESIGN.md section 12): the URL check, `msg_signature` over the encrypted
//! body (never the URL's `signature`, which covers no body), AES-256-CBC with WeChat's
//! 32-byte-block padding, and the appid check. A push is trusted only when all of them hold.

use aes::Aes256;
use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit, generic_array::GenericArray};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use std::collections::BTreeMap;
use std::fmt;

/// Larger bodies are refused before any parsing: a trade-management push is well under 4 KB.
pub const MAX_PUSH_BYTES: usize = 64 * 1024;

/// WeChat pads to a multiple of 32 bytes, not AES's 16 (PKCS#7 with k = 32).
const PAD_BLOCK: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The console's EncodingAESKey is 43 base64 characters (32 bytes once `=` is added).
    #[error("WX_PUSH_AES_KEY must be the console's 43-character EncodingAESKey")]
    BadAesKey,
    #[error("WX_PUSH_TOKEN must be 3-32 letters or digits")]
    BadToken,
    #[error("signature does not verify")]
    Signature,
    /// Safe mode only: a push without an `Encrypt` field is refused, whatever it says.
    #[error("not encrypted: only safe-mode (encrypted) pushes are accepted")]
    NotEncrypted,
    #[error("body of {0} bytes is over the {MAX_PUSH_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("malformed push: {0}")]
    Malformed(String),
    #[error("ciphertext cannot be decrypted: {0}")]
    Ciphertext(&'static str),
    /// Decrypted, but for another mini-program (WeChat appends the appid it encrypted for).
    #[error("encrypted for appid {0:?}, not ours")]
    OtherAppid(String),
}

/// The console's message-push settings: Token, EncodingAESKey, and our appid.
#[derive(Clone)]
pub struct PushKeys {
    token: String,
    key: [u8; 32],
    appid: String,
}

impl fmt::Debug for PushKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushKeys")
            .field("token", &"<redacted>")
            .field("key", &"<redacted>")
            .field("appid", &self.appid)
            .finish()
    }
}

/// A push as the URL and body brought it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushQuery {
    pub timestamp: String,
    pub nonce: String,
    pub msg_signature: Option<String>,
    pub encrypt_type: Option<String>,
}

/// An encrypted reply (`{Encrypt, MsgSignature, TimeStamp, Nonce}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptedReply {
    pub encrypt: String,
    pub msg_signature: String,
    pub timestamp: String,
    pub nonce: String,
}

/// `hex(sha1(concat(sorted(parts))))`: WeChat's signature of the URL check and of a body.
pub fn signature(parts: &[&str]) -> String {
    let mut sorted = parts.to_vec();
    sorted.sort_unstable();
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        sorted.concat().as_bytes(),
    );
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl PushKeys {
    pub fn new(token: &str, encoding_aes_key: &str, appid: &str) -> Result<PushKeys, PushError> {
        if !(3..=32).contains(&token.len()) || !token.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(PushError::BadToken);
        }
        if encoding_aes_key.len() != 43 {
            return Err(PushError::BadAesKey);
        }
        // The console makes 43 random characters: the last one's spare bits need not be zero.
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
        );
        let key = lenient
            .decode(format!("{encoding_aes_key}="))
            .ok()
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .ok_or(PushError::BadAesKey)?;
        Ok(PushKeys {
            token: token.to_owned(),
            key,
            appid: appid.to_owned(),
        })
    }

    /// The console's URL check (`GET`): `signature` over Token, timestamp and nonce. The
    /// caller answers `echostr` verbatim when this holds.
    pub fn verify_url(
        &self,
        signature: &str,
        timestamp: &str,
        nonce: &str,
    ) -> Result<(), PushError> {
        let expected = self::signature(&[&self.token, timestamp, nonce]);
        if crate::secrets::constant_time_eq(expected.as_bytes(), signature.as_bytes()) {
            Ok(())
        } else {
            Err(PushError::Signature)
        }
    }

    /// A safe-mode push (`POST`): the body's `Encrypt`, its `msg_signature`, decrypted and
    /// checked to be ours. Returns the message (JSON or XML, as configured) as text.
    pub fn open(&self, query: &PushQuery, body: &[u8]) -> Result<String, PushError> {
        if body.len() > MAX_PUSH_BYTES {
            return Err(PushError::TooLarge(body.len()));
        }
        let envelope = fields(body)?;
        let encrypt = envelope
            .get("Encrypt")
            .filter(|e| !e.is_empty())
            .ok_or(PushError::NotEncrypted)?;
        let msg_signature = query
            .msg_signature
            .as_deref()
            .ok_or(PushError::NotEncrypted)?;
        let expected = signature(&[&self.token, &query.timestamp, &query.nonce, encrypt]);
        if !crate::secrets::constant_time_eq(expected.as_bytes(), msg_signature.as_bytes()) {
            return Err(PushError::Signature);
        }
        self.decrypt(encrypt)
    }

    /// `Encrypt` -> the message: AES-256-CBC (IV = the key's first 16 bytes), 32-byte-block
    /// padding, then `random(16) || len(4, big-endian) || msg || appid`, the appid ours.
    pub fn decrypt(&self, encrypt: &str) -> Result<String, PushError> {
        let mut data = STANDARD
            .decode(encrypt.trim())
            .map_err(|_| PushError::Ciphertext("not base64"))?;
        if data.is_empty() || data.len() % 16 != 0 {
            return Err(PushError::Ciphertext("not a whole number of AES blocks"));
        }
        let cipher = Aes256::new(GenericArray::from_slice(&self.key));
        let mut previous = [0u8; 16];
        previous.copy_from_slice(&self.key[..16]);
        for block in data.chunks_exact_mut(16) {
            let mut this = [0u8; 16];
            this.copy_from_slice(block);
            cipher.decrypt_block(GenericArray::from_mut_slice(block));
            block
                .iter_mut()
                .zip(previous.iter())
                .for_each(|(b, p)| *b ^= p);
            previous = this;
        }
        let pad = usize::from(*data.last().unwrap_or(&0));
        if pad == 0 || pad > PAD_BLOCK || pad > data.len() {
            return Err(PushError::Ciphertext("bad padding"));
        }
        let body_len = data.len() - pad;
        if data[body_len..].iter().any(|&b| usize::from(b) != pad) {
            return Err(PushError::Ciphertext("bad padding"));
        }
        let plain = &data[..body_len];
        if plain.len() < 20 {
            return Err(PushError::Ciphertext("too short"));
        }
        let msg_len = u32::from_be_bytes([plain[16], plain[17], plain[18], plain[19]]) as usize;
        let rest = &plain[20..];
        if msg_len > rest.len() {
            return Err(PushError::Ciphertext("message length past the end"));
        }
        let (msg, appid) = rest.split_at(msg_len);
        if appid != self.appid.as_bytes() {
            return Err(PushError::OtherAppid(
                String::from_utf8_lossy(appid).chars().take(32).collect(),
            ));
        }
        String::from_utf8(msg.to_vec()).map_err(|_| PushError::Ciphertext("message is not UTF-8"))
    }

    /// The encrypted form of `msg` with this `random` prefix (WeChat's samples use 16 ASCII
    /// characters): what `decrypt` opens.
    pub fn encrypt(&self, msg: &str, random: [u8; 16]) -> String {
        let mut data = Vec::with_capacity(20 + msg.len() + self.appid.len() + PAD_BLOCK);
        data.extend_from_slice(&random);
        data.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        data.extend_from_slice(msg.as_bytes());
        data.extend_from_slice(self.appid.as_bytes());
        let pad = PAD_BLOCK - data.len() % PAD_BLOCK;
        data.extend(std::iter::repeat_n(pad as u8, pad));
        STANDARD.encode(self.cbc_encrypt(data))
    }

    /// AES-256-CBC of whole blocks (`data` padded already), IV = the key's first 16 bytes.
    fn cbc_encrypt(&self, mut data: Vec<u8>) -> Vec<u8> {
        let cipher = Aes256::new(GenericArray::from_slice(&self.key));
        let mut previous = [0u8; 16];
        previous.copy_from_slice(&self.key[..16]);
        for block in data.chunks_exact_mut(16) {
            block
                .iter_mut()
                .zip(previous.iter())
                .for_each(|(b, p)| *b ^= p);
            cipher.encrypt_block(GenericArray::from_mut_slice(block));
            previous.copy_from_slice(block);
        }
        data
    }

    /// An encrypted reply to a push, signed as WeChat checks it.
    pub fn reply(
        &self,
        msg: &str,
        timestamp: &str,
        nonce: &str,
        random: [u8; 16],
    ) -> EncryptedReply {
        let encrypt = self.encrypt(msg, random);
        EncryptedReply {
            msg_signature: signature(&[&self.token, timestamp, nonce, &encrypt]),
            encrypt,
            timestamp: timestamp.to_owned(),
            nonce: nonce.to_owned(),
        }
    }
}

/// The top-level fields of a push body or message, JSON (`{...}`) or WeChat's flat XML
/// (`<xml><Name><![CDATA[...]]></Name>...</xml>`). Numbers are kept as their text. XML with a
/// DTD, entity declarations or references other than the five predefined ones is refused
/// (no entity is ever expanded).
pub fn fields(body: &[u8]) -> Result<BTreeMap<String, String>, PushError> {
    if body.len() > MAX_PUSH_BYTES {
        return Err(PushError::TooLarge(body.len()));
    }
    let text = std::str::from_utf8(body).map_err(|_| PushError::Malformed("not UTF-8".into()))?;
    match text.trim_start().as_bytes().first() {
        Some(b'{') => json_fields(text),
        Some(b'<') => xml_fields(text),
        _ => Err(PushError::Malformed("neither JSON nor XML".into())),
    }
}

fn json_fields(text: &str) -> Result<BTreeMap<String, String>, PushError> {
    let value: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| PushError::Malformed(format!("JSON: {e}")))?;
    Ok(value
        .into_iter()
        .filter_map(|(k, v)| match v {
            serde_json::Value::String(s) => Some((k, s)),
            serde_json::Value::Number(n) => Some((k, n.to_string())),
            serde_json::Value::Bool(b) => Some((k, b.to_string())),
            // Nested values are nothing a trade-management event carries.
            _ => None,
        })
        .collect())
}

fn xml_fields(text: &str) -> Result<BTreeMap<String, String>, PushError> {
    use xmlparser::{ElementEnd, Token};
    let bad = |why: &str| PushError::Malformed(format!("XML: {why}"));
    let mut out = BTreeMap::new();
    let mut depth = 0usize;
    let mut current: Option<String> = None;
    let mut value = String::new();
    for token in xmlparser::Tokenizer::from(text) {
        let token = token.map_err(|e| bad(&e.to_string()))?;
        match token {
            Token::Declaration { .. } | Token::Comment { .. } => {}
            Token::DtdStart { .. }
            | Token::EmptyDtd { .. }
            | Token::EntityDeclaration { .. }
            | Token::DtdEnd { .. } => return Err(bad("a DTD or entity declaration")),
            Token::ProcessingInstruction { .. } => return Err(bad("a processing instruction")),
            Token::Attribute { .. } => {}
            Token::ElementStart { local, .. } => {
                depth += 1;
                match depth {
                    1 if local.as_str() == "xml" => {}
                    1 => return Err(bad("the root element is not <xml>")),
                    2 => {
                        current = Some(local.as_str().to_owned());
                        value.clear();
                    }
                    _ => return Err(bad("nested elements")),
                }
            }
            Token::ElementEnd { end, .. } => match end {
                ElementEnd::Open => {}
                ElementEnd::Close(..) | ElementEnd::Empty => {
                    if depth == 2
                        && let Some(name) = current.take()
                    {
                        out.insert(name, std::mem::take(&mut value));
                    }
                    depth = depth.saturating_sub(1);
                }
            },
            Token::Text { text } if depth == 2 => value.push_str(&unescape(text.as_str())?),
            Token::Text { text } if text.as_str().trim().is_empty() => {}
            Token::Text { .. } => return Err(bad("text outside a field")),
            Token::Cdata { text, .. } if depth == 2 => value.push_str(text.as_str()),
            Token::Cdata { .. } => return Err(bad("CDATA outside a field")),
        }
    }
    if depth != 0 {
        return Err(bad("unclosed element"));
    }
    Ok(out)
}

/// The five predefined entities and character references; anything else is refused.
fn unescape(text: &str) -> Result<String, PushError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let end = rest[at..]
            .find(';')
            .ok_or_else(|| PushError::Malformed("XML: an unterminated entity".into()))?;
        let name = &rest[at + 1..at + end];
        let c = match name {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            n if n.starts_with("#x") => u32::from_str_radix(&n[2..], 16)
                .ok()
                .and_then(char::from_u32)
                .ok_or_else(|| PushError::Malformed(format!("XML: bad character &{n};")))?,
            n if n.starts_with('#') => n[1..]
                .parse::<u32>()
                .ok()
                .and_then(char::from_u32)
                .ok_or_else(|| PushError::Malformed(format!("XML: bad character &{n};")))?,
            n => {
                return Err(PushError::Malformed(format!(
                    "XML: entity &{};",
                    n.chars().take(16).collect::<String>()
                )));
            }
        };
        out.push(c);
        rest = &rest[at + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Official vectors (WeChat's message-push page, D-push in
    // ../shared/reference/wechat-order-shipping.md section 4.4).
    const TOKEN: &str = "AAAAA";
    const AES_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    const APPID: &str = "wxba5fad812f8e6fb9";
    const ENCRYPT: &str = "+qdx1OKCy+5JPCBFWw70tm0fJGb2Jmeia4FCB7kao+/Q5c/ohsOzQHi8khUOb05JCpj0JB4RvQMkUyus8TPxLKJGQqcvZqzDpVzazhZv6JsXUnnR8XGT740XgXZUXQ7vJVnAG+tE8NUd4yFyjPy7GgiaviNrlCTj+l5kdfMuFUPpRSrfMZuMcp3Fn2Pede2IuQrKEYwKSqFIZoNqJ4M8EajAsjLY2km32IIjdf8YL/P50F7mStwntrA2cPDrM1kb6mOcfBgRtWygb3VIYnSeOBrebufAlr7F9mFUPAJGj04=";
    const MSG: &str = r#"{"ToUserName":"gh_97417a04a28d","FromUserName":"o9AgO5Kd5ggOC-bXrbNODIiE3bGY","CreateTime":1714112445,"MsgType":"event","Event":"debug_demo","debug_str":"hello world"}"#;

    fn keys() -> PushKeys {
        PushKeys::new(TOKEN, AES_KEY, APPID).unwrap()
    }

    fn query(msg_signature: &str) -> PushQuery {
        PushQuery {
            timestamp: "1714112445".into(),
            nonce: "415670741".into(),
            msg_signature: Some(msg_signature.into()),
            encrypt_type: Some("aes".into()),
        }
    }

    fn envelope(encrypt: &str) -> Vec<u8> {
        serde_json::json!({"ToUserName": "gh_97417a04a28d", "Encrypt": encrypt})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn official_url_verification_and_plaintext_signatures() {
        assert_eq!(
            signature(&[TOKEN, "1714036504", "1514711492"]),
            "f464b24fc39322e44b38aa78f5edd27bd1441696"
        );
        assert!(
            keys()
                .verify_url(
                    "f464b24fc39322e44b38aa78f5edd27bd1441696",
                    "1714036504",
                    "1514711492"
                )
                .is_ok()
        );
        assert_eq!(
            keys().verify_url(
                "f464b24fc39322e44b38aa78f5edd27bd1441697",
                "1714036504",
                "1514711492"
            ),
            Err(PushError::Signature)
        );
        assert_eq!(
            signature(&[TOKEN, "1714037059", "486452656"]),
            "899cf89e464efb63f54ddac96b0a0a235f53aa78"
        );
        // The URL's `signature` of the safe-mode vector covers no body.
        assert_eq!(
            signature(&[TOKEN, "1714112445", "415670741"]),
            "6c5c811b55cc85e0e1b54100749188c20beb3f5d"
        );
    }

    #[test]
    fn official_safe_mode_push_opens() {
        assert_eq!(
            signature(&[TOKEN, "1714112445", "415670741", ENCRYPT]),
            "046e02f8204d34f8ba5fa3b1db94908f3df2e9b3"
        );
        let msg = keys()
            .open(
                &query("046e02f8204d34f8ba5fa3b1db94908f3df2e9b3"),
                &envelope(ENCRYPT),
            )
            .unwrap();
        assert_eq!(msg, MSG);
        let fields = fields(msg.as_bytes()).unwrap();
        assert_eq!(fields["Event"], "debug_demo");
        assert_eq!(fields["CreateTime"], "1714112445");
        // The same vector re-encrypted with its own random prefix is the official bytes.
        assert_eq!(keys().encrypt(MSG, *b"a8eedb185eb2fecf"), ENCRYPT);
    }

    #[test]
    fn official_encrypted_reply() {
        let reply = keys().reply(
            r#"{"demo_resp":"good luck"}"#,
            "1713424427",
            "415670741",
            *b"707722b803182950",
        );
        assert_eq!(
            reply.encrypt,
            "ELGduP2YcVatjqIS+eZbp80MNLoAUWvzzyJxgGzxZO/5sAvd070Bs6qrLARC9nVHm48Y4hyRbtzve1L32tmxSQ=="
        );
        assert_eq!(
            reply.msg_signature,
            "1b9339964ed2e271e7c7b6ff2b0ef902fc94dea1"
        );
        assert_eq!(
            keys().decrypt(&reply.encrypt).unwrap(),
            r#"{"demo_resp":"good luck"}"#
        );
    }

    #[test]
    fn only_a_push_that_verifies_decrypts_and_is_ours_opens() {
        let k = keys();
        let good = "046e02f8204d34f8ba5fa3b1db94908f3df2e9b3";
        // msg_signature wrong, absent (only the URL's `signature`), or over another body.
        assert_eq!(
            k.open(
                &query("046e02f8204d34f8ba5fa3b1db94908f3df2e9b4"),
                &envelope(ENCRYPT)
            ),
            Err(PushError::Signature)
        );
        let mut no_sig = query(good);
        no_sig.msg_signature = None;
        assert_eq!(
            k.open(&no_sig, &envelope(ENCRYPT)),
            Err(PushError::NotEncrypted)
        );
        let other = k.encrypt(MSG, *b"0000000000000000");
        assert_eq!(
            k.open(&query(good), &envelope(&other)),
            Err(PushError::Signature)
        );
        // A plaintext push in safe mode, whatever its signature.
        assert_eq!(
            k.open(&query(good), MSG.as_bytes()),
            Err(PushError::NotEncrypted)
        );
        // Encrypted for another mini-program with our key: signed right, still refused.
        let theirs = PushKeys::new(TOKEN, AES_KEY, "wx0000000000000000").unwrap();
        let foreign = theirs.encrypt(MSG, *b"0000000000000000");
        let signed = signature(&[TOKEN, "1714112445", "415670741", &foreign]);
        assert_eq!(
            k.open(&query(&signed), &envelope(&foreign)),
            Err(PushError::OtherAppid("wx0000000000000000".into()))
        );
        // Truncated, or not whole blocks, or not base64.
        let raw = STANDARD.decode(ENCRYPT).unwrap();
        for cut in [&raw[..raw.len() - 16], &raw[..raw.len() - 5], &raw[..16]] {
            assert!(
                matches!(
                    k.decrypt(&STANDARD.encode(cut)),
                    Err(PushError::Ciphertext(_))
                ),
                "{} bytes",
                cut.len()
            );
        }
        assert!(matches!(k.decrypt("%%%"), Err(PushError::Ciphertext(_))));
        assert!(matches!(k.decrypt(""), Err(PushError::Ciphertext(_))));
        // Over the size limit: refused before anything is parsed.
        let big = vec![b' '; MAX_PUSH_BYTES + 1];
        assert_eq!(
            k.open(&query(good), &big),
            Err(PushError::TooLarge(MAX_PUSH_BYTES + 1))
        );
    }

    #[test]
    fn mis_padded_ciphertexts_are_refused() {
        // Encrypt a message whose padding is then made wrong: pad bytes 0, 33 and mixed.
        let k = keys();
        for last in [0u8, 33, 7] {
            let mut plain = Vec::new();
            plain.extend_from_slice(b"0123456789abcdef");
            plain.extend_from_slice(&2u32.to_be_bytes());
            plain.extend_from_slice(b"{}");
            plain.extend_from_slice(APPID.as_bytes());
            while plain.len() % 32 != 31 {
                plain.push(10);
            }
            plain.push(last);
            assert_eq!(
                k.decrypt(&STANDARD.encode(k.cbc_encrypt(plain))),
                Err(PushError::Ciphertext("bad padding")),
                "last byte {last}"
            );
        }
    }

    #[test]
    fn xml_pushes_parse_and_entities_are_never_expanded() {
        let xml = b"<xml><ToUserName><![CDATA[gh_97417a04a28d]]></ToUserName><Encrypt><![CDATA[abc]]></Encrypt><CreateTime>1714112445</CreateTime><Note>a &amp; b</Note></xml>";
        let f = fields(xml).unwrap();
        assert_eq!(f["Encrypt"], "abc");
        assert_eq!(f["CreateTime"], "1714112445");
        assert_eq!(f["Note"], "a & b");
        let bomb = br#"<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY a "aaaaaaaa"><!ENTITY b "&a;&a;&a;">]><xml><Encrypt>&b;</Encrypt></xml>"#;
        assert!(matches!(fields(bomb), Err(PushError::Malformed(m)) if m.contains("DTD")));
        let external = b"<xml><Encrypt>&xxe;</Encrypt></xml>";
        assert!(matches!(fields(external), Err(PushError::Malformed(m)) if m.contains("entity")));
        assert!(matches!(
            fields(b"<root><A>1</A></root>"),
            Err(PushError::Malformed(_))
        ));
        assert!(matches!(
            fields(b"<xml><A><B>1</B></A></xml>"),
            Err(PushError::Malformed(_))
        ));
        assert!(matches!(
            fields(b"<xml><A>1</A>"),
            Err(PushError::Malformed(_))
        ));
        assert!(matches!(fields(b"hello"), Err(PushError::Malformed(_))));
    }

    #[test]
    fn keys_are_checked_and_never_printed() {
        assert_eq!(
            PushKeys::new(TOKEN, "short", APPID).unwrap_err(),
            PushError::BadAesKey
        );
        assert_eq!(
            PushKeys::new(TOKEN, &"!".repeat(43), APPID).unwrap_err(),
            PushError::BadAesKey
        );
        assert_eq!(
            PushKeys::new("a b", AES_KEY, APPID).unwrap_err(),
            PushError::BadToken
        );
        let k = PushKeys::new(
            "SecretTok3n",
            "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR",
            APPID,
        )
        .unwrap();
        let printed = format!("{k:?}");
        assert!(!printed.contains("SecretTok3n"), "{printed}");
        assert!(!printed.contains("kWxPEV2U"), "{printed}");
    }
}
