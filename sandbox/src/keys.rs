//! The sandbox's credentials: a merchant key pair, a simulated WeChat Pay key pair, an APIv3
//! key, the mini-program's AppSecret, a session-token key pair (EC P-256) and the merchant's
//! webhook secret (`whsec_`), generated on first start under `<data-dir>/keys/` and reused
//! afterwards, so a running sandbox and the real function binaries pointed at it agree
//! (DESIGN.md section 9). RSA generation is the only use of the `rsa` crate; signing and
//! verifying stay in `shared`.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use rsa::pkcs8::{EncodePrivateKey as _, LineEnding};
use rsa::sha2::{Digest as _, Sha256};
use shared::session::{PublicKey, SessionKeyError, SigningKey};
use shared::webhook::{WebhookError, WebhookSecret};
use shared::wechatpay::{ApiV3Key, KeyError, RsaPrivateKey, RsaPublicKey};

pub const MERCHANT_KEY_FILE: &str = "merchant_key.pem";
pub const MERCHANT_PUBLIC_FILE: &str = "merchant_public.pem";
pub const WECHATPAY_KEY_FILE: &str = "wechatpay_key.pem";
pub const WECHATPAY_PUBLIC_FILE: &str = "wechatpay_public.pem";
pub const APIV3_KEY_FILE: &str = "apiv3_key.txt";
pub const APP_SECRET_FILE: &str = "app_secret.txt";
pub const MERCHANT_API_TOKEN_FILE: &str = "merchant_api_token.txt";
pub const SESSION_KEY_FILE: &str = "session_key.pem";
pub const SESSION_PUBLIC_FILE: &str = "session_public.pem";
pub const WEBHOOK_SECRET_FILE: &str = "webhook_secret.txt";

/// WeChat Pay's merchant and platform keys are RSA-2048.
const RSA_BITS: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}: {source}")]
    InvalidKey { path: PathBuf, source: KeyError },
    #[error("{path}: {source}")]
    InvalidSessionKey {
        path: PathBuf,
        source: SessionKeyError,
    },
    #[error("{path}: the APIv3 key must be 32 characters of [0-9A-Za-z]")]
    InvalidApiV3Key { path: PathBuf },
    #[error("{path}: {source}")]
    InvalidWebhookSecret { path: PathBuf, source: WebhookError },
    #[error("RSA key generation failed: {0}")]
    Generation(String),
}

/// The sandbox's keys, loaded from (or first written to) `<data-dir>/keys/`.
///
/// The merchant serial and the `PUB_KEY_ID_...` are derived from the public keys, so they
/// need no files of their own and stay the same for as long as the keys do.
#[derive(Clone)]
pub struct SandboxKeys {
    dir: PathBuf,
    generated: bool,
    merchant_key_pem: String,
    merchant_key: RsaPrivateKey,
    merchant_public_pem: String,
    wechatpay_key_pem: String,
    wechatpay_key: RsaPrivateKey,
    wechatpay_public_pem: String,
    merchant_serial_no: String,
    wechatpay_public_key_id: String,
    apiv3_key_text: String,
    apiv3_key: ApiV3Key,
    app_secret: String,
    merchant_api_token: String,
    session_key: SigningKey,
    webhook_secret: WebhookSecret,
}

impl SandboxKeys {
    /// Loads the keys under `<data_dir>/keys/`, generating whatever is missing.
    ///
    /// A private key file is the source of truth for its pair: a missing or stale public
    /// file is rewritten from it. Files are created with create-new semantics, so two
    /// sandboxes starting at once on one data dir end up with the same keys.
    pub fn load_or_generate(data_dir: &Path) -> Result<SandboxKeys, KeysError> {
        let dir = data_dir.join("keys");
        fs::create_dir_all(&dir).map_err(|source| KeysError::Io {
            path: dir.clone(),
            source,
        })?;
        let mut generated = false;
        let (merchant_key_pem, merchant_key) =
            load_or_generate_pair(&dir, MERCHANT_KEY_FILE, &mut generated)?;
        let merchant_public_pem =
            sync_public(&dir, MERCHANT_PUBLIC_FILE, &merchant_key.public_key())?;
        let (wechatpay_key_pem, wechatpay_key) =
            load_or_generate_pair(&dir, WECHATPAY_KEY_FILE, &mut generated)?;
        let wechatpay_public_pem =
            sync_public(&dir, WECHATPAY_PUBLIC_FILE, &wechatpay_key.public_key())?;
        let (apiv3_key_text, apiv3_key) = load_or_generate_apiv3(&dir, &mut generated)?;
        let app_secret = load_or_generate_text(&dir.join(APP_SECRET_FILE), &mut generated)?;
        let merchant_api_token =
            load_or_generate_text(&dir.join(MERCHANT_API_TOKEN_FILE), &mut generated)?;
        let session_key = load_or_generate_session_key(&dir, &mut generated)?;
        let webhook_secret = load_or_generate_webhook_secret(&dir, &mut generated)?;

        Ok(SandboxKeys {
            merchant_serial_no: merchant_serial_no(&merchant_key.public_key()),
            wechatpay_public_key_id: public_key_id(&wechatpay_key.public_key()),
            dir,
            generated,
            merchant_key_pem,
            merchant_key,
            merchant_public_pem,
            wechatpay_key_pem,
            wechatpay_key,
            wechatpay_public_pem,
            apiv3_key_text,
            apiv3_key,
            app_secret,
            merchant_api_token,
            session_key,
            webhook_secret,
        })
    }

    /// `<data-dir>/keys`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether this call wrote any new key (first start, or a file was deleted).
    pub fn generated(&self) -> bool {
        self.generated
    }

    /// PKCS#8 PEM, the form of `apiclient_key.pem` (`WXPAY_MCH_PRIVATE_KEY`). Secret.
    pub fn merchant_key_pem(&self) -> &str {
        &self.merchant_key_pem
    }

    pub fn merchant_key(&self) -> &RsaPrivateKey {
        &self.merchant_key
    }

    /// SPKI PEM; the simulator verifies merchant requests with it.
    pub fn merchant_public_pem(&self) -> &str {
        &self.merchant_public_pem
    }

    pub fn merchant_public_key(&self) -> RsaPublicKey {
        self.merchant_key.public_key()
    }

    /// The simulated merchant API certificate serial (`WXPAY_MCH_SERIAL_NO`): 40 upper-case
    /// hex characters, the first 20 bytes of SHA-256 over the merchant SPKI.
    pub fn merchant_serial_no(&self) -> &str {
        &self.merchant_serial_no
    }

    /// PKCS#8 PEM of the simulated WeChat Pay key. Secret (it is what makes the simulator's
    /// signatures trustworthy to the backend).
    pub fn wechatpay_key_pem(&self) -> &str {
        &self.wechatpay_key_pem
    }

    pub fn wechatpay_key(&self) -> &RsaPrivateKey {
        &self.wechatpay_key
    }

    /// SPKI PEM, the form of WeChat Pay's `pub_key.pem` (`WXPAY_PUBLIC_KEY`).
    pub fn wechatpay_public_pem(&self) -> &str {
        &self.wechatpay_public_pem
    }

    pub fn wechatpay_public_key(&self) -> RsaPublicKey {
        self.wechatpay_key.public_key()
    }

    /// `PUB_KEY_ID_` + 34 digits (`WXPAY_PUBLIC_KEY_ID`), derived from the WeChat Pay SPKI.
    pub fn wechatpay_public_key_id(&self) -> &str {
        &self.wechatpay_public_key_id
    }

    /// The 32-character APIv3 key as configured (`WXPAY_APIV3_KEY`). Secret.
    pub fn apiv3_key_text(&self) -> &str {
        &self.apiv3_key_text
    }

    pub fn apiv3_key(&self) -> &ApiV3Key {
        &self.apiv3_key
    }

    pub fn merchant_key_path(&self) -> PathBuf {
        self.dir.join(MERCHANT_KEY_FILE)
    }

    pub fn merchant_public_path(&self) -> PathBuf {
        self.dir.join(MERCHANT_PUBLIC_FILE)
    }

    pub fn wechatpay_key_path(&self) -> PathBuf {
        self.dir.join(WECHATPAY_KEY_FILE)
    }

    pub fn wechatpay_public_path(&self) -> PathBuf {
        self.dir.join(WECHATPAY_PUBLIC_FILE)
    }

    pub fn apiv3_key_path(&self) -> PathBuf {
        self.dir.join(APIV3_KEY_FILE)
    }

    /// The simulated mini-program's AppSecret (`WX_APP_SECRET`), 32 of `[0-9A-Za-z]`. Secret.
    pub fn app_secret(&self) -> &str {
        &self.app_secret
    }

    /// The message push Token of the simulated mini-program console (`WX_PUSH_TOKEN`):
    /// derived from the AppSecret, so it needs no file of its own. Secret.
    pub fn push_token(&self) -> String {
        let digest = Sha256::digest(format!("wx-push-token/{}", self.app_secret).as_bytes());
        digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
    }

    /// The console's EncodingAESKey (`WX_PUSH_AES_KEY`): 43 base64 characters of 32 bytes
    /// derived from the AppSecret. Secret.
    pub fn push_aes_key(&self) -> String {
        use base64::Engine as _;
        let digest = Sha256::digest(format!("wx-push-key/{}", self.app_secret).as_bytes());
        let mut key = base64::engine::general_purpose::STANDARD.encode(digest);
        key.truncate(43);
        key
    }

    /// merchant-api's bearer token (`MERCHANT_API_TOKEN`). Secret.
    pub fn merchant_api_token(&self) -> &str {
        &self.merchant_api_token
    }

    /// The EC P-256 key that signs session tokens (`SESSION_SIGNING_KEY_FILE`). Secret.
    pub fn session_key(&self) -> &SigningKey {
        &self.session_key
    }

    /// Its public half (`SESSION_PUBLIC_KEYS_FILE`), which verifies session tokens.
    pub fn session_public_key(&self) -> &PublicKey {
        self.session_key.public_key()
    }

    pub fn session_key_path(&self) -> PathBuf {
        self.dir.join(SESSION_KEY_FILE)
    }

    pub fn session_public_path(&self) -> PathBuf {
        self.dir.join(SESSION_PUBLIC_FILE)
    }

    /// The secret that signs webhook deliveries (`WEBHOOK_SECRET`) and that the sandbox's
    /// receiver verifies them with. Secret.
    pub fn webhook_secret(&self) -> &WebhookSecret {
        &self.webhook_secret
    }
}

impl fmt::Debug for SandboxKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxKeys")
            .field("dir", &self.dir)
            .field("generated", &self.generated)
            .field("merchant_serial_no", &self.merchant_serial_no)
            .field("wechatpay_public_key_id", &self.wechatpay_public_key_id)
            .finish_non_exhaustive()
    }
}

fn load_or_generate_pair(
    dir: &Path,
    file: &str,
    generated: &mut bool,
) -> Result<(String, RsaPrivateKey), KeysError> {
    let path = dir.join(file);
    let pem = match read_optional(&path)? {
        Some(pem) => pem,
        None => {
            let pem = generate_pkcs8_pem()?;
            if write_new(&path, &pem, 0o600)? {
                tracing::info!(path = %path.display(), "generated a sandbox RSA key");
                *generated = true;
                pem
            } else {
                // Another process created it between our read and our write: use theirs.
                read_optional(&path)?.unwrap_or(pem)
            }
        }
    };
    let key = RsaPrivateKey::from_pkcs8_pem(&pem).map_err(|source| KeysError::InvalidKey {
        path: path.clone(),
        source,
    })?;
    Ok((pem, key))
}

/// Writes the public half next to the private key unless the file already holds it.
fn sync_public(dir: &Path, file: &str, key: &RsaPublicKey) -> Result<String, KeysError> {
    let path = dir.join(file);
    let pem = key.to_spki_pem();
    let current = read_optional(&path)?;
    let up_to_date = current
        .as_deref()
        .and_then(|existing| RsaPublicKey::from_spki_pem(existing).ok())
        .is_some_and(|existing| existing == *key);
    if !up_to_date {
        write_replace(&path, &pem, 0o644)?;
    }
    Ok(pem)
}

fn load_or_generate_apiv3(
    dir: &Path,
    generated: &mut bool,
) -> Result<(String, ApiV3Key), KeysError> {
    let path = dir.join(APIV3_KEY_FILE);
    let text = load_or_generate_text(&path, generated)?;
    let valid = text.len() == 32 && text.bytes().all(|b| b.is_ascii_alphanumeric());
    let key = ApiV3Key::new(&text)
        .ok()
        .filter(|_| valid)
        .ok_or_else(|| KeysError::InvalidApiV3Key { path: path.clone() })?;
    Ok((text, key))
}

/// The one-line secret in `path`, or a new one written there: 32 characters of
/// `[0-9A-Za-z]` from the OS CSPRNG (the shape of an APIv3 key, and of an AppSecret).
fn load_or_generate_text(path: &Path, generated: &mut bool) -> Result<String, KeysError> {
    Ok(match read_optional(path)? {
        Some(text) => text.trim().to_owned(),
        None => {
            let text = shared::wechatpay::nonce();
            if write_new(path, &format!("{text}\n"), 0o600)? {
                *generated = true;
                text
            } else {
                read_optional(path)?
                    .map(|t| t.trim().to_owned())
                    .unwrap_or(text)
            }
        }
    })
}

/// The session signing key (PKCS#8, the first block of its file), generated by ring on first
/// start; its public half is rewritten whenever it does not match.
fn load_or_generate_session_key(dir: &Path, generated: &mut bool) -> Result<SigningKey, KeysError> {
    let path = dir.join(SESSION_KEY_FILE);
    let pem = match read_optional(&path)? {
        Some(pem) => pem,
        None => {
            let pem = SigningKey::generate_pkcs8_pem();
            if write_new(&path, &pem, 0o600)? {
                tracing::info!(path = %path.display(), "generated a sandbox session key");
                *generated = true;
                pem
            } else {
                read_optional(&path)?.unwrap_or(pem)
            }
        }
    };
    let invalid = |source| KeysError::InvalidSessionKey {
        path: path.clone(),
        source,
    };
    let key = SigningKey::parse_all(&pem)
        .map_err(invalid)?
        .into_iter()
        .next()
        .ok_or_else(|| invalid(SessionKeyError::Empty))?;
    let public_path = dir.join(SESSION_PUBLIC_FILE);
    let current = read_optional(&public_path)?;
    let up_to_date = current
        .as_deref()
        .and_then(|existing| PublicKey::parse_all(existing).ok())
        .is_some_and(|existing| existing == [key.public_key().clone()]);
    if !up_to_date {
        write_replace(&public_path, &key.public_key().to_spki_pem(), 0o644)?;
    }
    Ok(key)
}

/// The webhook secret, `whsec_` + base64 of 32 random bytes (generated by `shared`, which
/// owns the format); a file that no longer parses stops the start rather than being replaced,
/// as a receiver elsewhere may hold it.
fn load_or_generate_webhook_secret(
    dir: &Path,
    generated: &mut bool,
) -> Result<WebhookSecret, KeysError> {
    let path = dir.join(WEBHOOK_SECRET_FILE);
    let text = match read_optional(&path)? {
        Some(text) => text,
        None => {
            let text = WebhookSecret::generate().expose_whsec();
            if write_new(&path, &format!("{text}\n"), 0o600)? {
                *generated = true;
                text
            } else {
                read_optional(&path)?.unwrap_or(text)
            }
        }
    };
    WebhookSecret::parse(&text).map_err(|source| KeysError::InvalidWebhookSecret { path, source })
}

fn generate_pkcs8_pem() -> Result<String, KeysError> {
    let key = rsa::PrivateKey::new(&mut getrandom::SysRng, RSA_BITS)
        .map_err(|e| KeysError::Generation(e.to_string()))?;
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeysError::Generation(e.to_string()))?;
    Ok(pem.as_str().to_owned())
}

fn merchant_serial_no(key: &RsaPublicKey) -> String {
    Sha256::digest(key.to_spki_der())[..20]
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// Official ids look like `PUB_KEY_ID_0000000000000024101100397200000006`: 34 digits.
fn public_key_id(key: &RsaPublicKey) -> String {
    let digest = Sha256::digest(key.to_spki_der());
    let digits: String = digest
        .iter()
        .take(17)
        .map(|b| format!("{:02}", b % 100))
        .collect();
    format!("PUB_KEY_ID_{digits}")
}

fn read_optional(path: &Path) -> Result<Option<String>, KeysError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(KeysError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Creates `path` with `contents` unless it exists; returns whether it was created. The
/// contents go to a private temporary file first and are hard-linked into place, so no
/// reader ever sees a half-written key and an existing file is never replaced.
fn write_new(path: &Path, contents: &str, mode: u32) -> Result<bool, KeysError> {
    let io_err = |source| KeysError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = temp_path(path);
    write_file(&tmp, contents, mode).map_err(io_err)?;
    let outcome = match fs::hard_link(&tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        // Some mounted filesystems have no hard links: fall back to a plain rename, which
        // only loses the guard against two first starts racing.
        Err(_) if !path.exists() => return fs::rename(&tmp, path).map(|()| true).map_err(io_err),
        Err(e) => Err(io_err(e)),
    };
    let _ = fs::remove_file(&tmp);
    outcome
}

/// Replaces `path` atomically (temporary file + rename).
fn write_replace(path: &Path, contents: &str, mode: u32) -> Result<(), KeysError> {
    let io_err = |source| KeysError::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = temp_path(path);
    write_file(&tmp, contents, mode).map_err(io_err)?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err(e)
    })
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    path.with_file_name(name)
}

fn write_file(path: &Path, contents: &str, mode: u32) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}
