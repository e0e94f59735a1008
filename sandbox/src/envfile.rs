//! The variables that configure a function against a running sandbox: one list, used both
//! to build the in-process handlers (`shared::app::build`) and to write
//! `<data-dir>/sandbox.env` for the real function binaries. The file names secrets (the
//! APIv3 key, the AppSecret, the key file paths), so it is written with mode 0600 and never
//! printed.

use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::path::Path;

use crate::keys::SandboxKeys;

/// Dummy credentials and region for the embedded engine (it checks neither). The sandbox
/// also puts them in its own process environment, see `main.rs`.
pub const AWS_REGION: &str = shared::store::embedded::REGION;
pub const AWS_ACCESS_KEY_ID: &str = "sandbox";
pub const AWS_SECRET_ACCESS_KEY: &str = "sandbox";
/// The receiver's path on the functions port (`WEBHOOK_URL`).
pub const WEBHOOK_PATH: &str = "/sandbox/webhooks";
/// `SWEEP_GRACE_SECONDS` in the sandbox.
pub const SWEEP_GRACE_SECONDS: u64 = 1;

/// What the variables are computed from.
pub struct EnvInputs<'a> {
    pub keys: &'a SandboxKeys,
    pub appid: &'a str,
    pub mchid: &'a str,
    /// `http://127.0.0.1:<port>` of the functions.
    pub functions_url: &'a str,
    /// `http://127.0.0.1:<port>` of the WeChat Pay simulator.
    pub wechat_url: &'a str,
    pub table: &'a str,
    pub dynamodb_endpoint: &'a str,
    pub order_ttl_secs: u64,
    /// `--webhook-url`: events go there instead of the sandbox's receiver.
    pub webhook_url: Option<&'a str>,
}

/// Every variable, in the order the file lists them.
pub fn variables(i: &EnvInputs<'_>) -> Vec<(&'static str, String)> {
    let path = |p: std::path::PathBuf| p.display().to_string();
    vec![
        ("WXPAY_APPID", i.appid.to_owned()),
        ("WXPAY_MCHID", i.mchid.to_owned()),
        (
            "WXPAY_MCH_SERIAL_NO",
            i.keys.merchant_serial_no().to_owned(),
        ),
        (
            "WXPAY_MCH_PRIVATE_KEY_FILE",
            path(i.keys.merchant_key_path()),
        ),
        ("WXPAY_APIV3_KEY", i.keys.apiv3_key_text().to_owned()),
        (
            "WXPAY_PUBLIC_KEY_FILE",
            path(i.keys.wechatpay_public_path()),
        ),
        (
            "WXPAY_PUBLIC_KEY_ID",
            i.keys.wechatpay_public_key_id().to_owned(),
        ),
        (
            "WXPAY_NOTIFY_URL",
            format!("{}/notify/wechatpay", i.functions_url),
        ),
        ("WXPAY_API_BASE", i.wechat_url.to_owned()),
        ("ORDERS_TABLE", i.table.to_owned()),
        ("DYNAMODB_ENDPOINT", i.dynamodb_endpoint.to_owned()),
        ("AWS_REGION", AWS_REGION.to_owned()),
        ("AWS_ACCESS_KEY_ID", AWS_ACCESS_KEY_ID.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", AWS_SECRET_ACCESS_KEY.to_owned()),
        ("ORDER_TTL_SECONDS", i.order_ttl_secs.to_string()),
        // The timeout-sweeper leaves an order alone this long past expire_at (30 s when
        // deployed): short here, so `--order-ttl 60 --sweep-every 5` shows expiry at once.
        ("SWEEP_GRACE_SECONDS", SWEEP_GRACE_SECONDS.to_string()),
        // Identity: session tokens from POST /sessions (the simulator's jscode2session),
        // and X-Debug-Openid as well, in the sandbox only.
        ("WX_APP_SECRET", i.keys.app_secret().to_owned()),
        ("WX_API_BASE", i.wechat_url.to_owned()),
        // mp-push: the simulated console's message push (safe mode); the simulator signs and
        // encrypts its settlement pushes with these.
        ("WX_PUSH_TOKEN", i.keys.push_token()),
        ("WX_PUSH_AES_KEY", i.keys.push_aes_key()),
        ("SESSION_SIGNING_KEY_FILE", path(i.keys.session_key_path())),
        (
            "SESSION_PUBLIC_KEYS_FILE",
            path(i.keys.session_public_path()),
        ),
        ("SESSION_ISSUER", i.functions_url.to_owned()),
        ("AUTH_MODE", "token".to_owned()),
        ("MERCHANT_AUTH", "token".to_owned()),
        ("MERCHANT_API_TOKEN", i.keys.merchant_api_token().to_owned()),
        // Order events go to the sandbox's own receiver, which checks them with this secret
        // (or to `--webhook-url`, signed with the same secret).
        (
            "WEBHOOK_URL",
            i.webhook_url
                .map(str::to_owned)
                .unwrap_or_else(|| format!("{}{}", i.functions_url, WEBHOOK_PATH)),
        ),
        ("WEBHOOK_SECRET", i.keys.webhook_secret().expose_whsec()),
        ("ALLOW_DEBUG_IDENTITY", "1".to_owned()),
        ("LOG_FORMAT", "text".to_owned()),
    ]
}

/// The file's text: a header saying what it is, then `NAME=value` lines a POSIX shell can
/// source (values quoted only when they need it).
pub fn render(vars: &[(&'static str, String)], env_path: &Path) -> String {
    let mut out = String::new();
    out.push_str(
        "# wxpay-orders sandbox: the variables that point a function binary at the running\n\
         # sandbox. Rewritten on every start (ports and the DynamoDB endpoint change).\n\
         # Holds secrets (the APIv3 key, the webhook secret, key file paths): keep it\n\
         # private, never commit it.\n",
    );
    out.push_str(&format!(
        "#   set -a; . {}; set +a; PORT=9100 target/debug/place-order\n",
        shell_quote(&env_path.display().to_string())
    ));
    for (name, value) in vars {
        out.push_str(name);
        out.push('=');
        out.push_str(&shell_quote(value));
        out.push('\n');
    }
    out
}

/// `value` as a shell word: as is when it is plain, else in single quotes.
pub fn shell_quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-./:@%+,=".contains(&b));
    if plain {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

/// Writes `contents` to `path` with mode 0600, replacing it atomically (temporary file in the
/// same directory, then rename), so a reader never sees half a file and a previous file with
/// looser permissions is replaced rather than reused.
pub fn write_private(path: &Path, contents: &str) -> io::Result<()> {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let _ = fs::remove_file(&tmp);
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let result = options.open(&tmp).and_then(|mut file| {
        file.write_all(contents.as_bytes())?;
        file.sync_all()
    });
    let result = result.and_then(|()| fs::rename(&tmp, path));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_plain_values_and_survives_quotes() {
        assert_eq!(
            shell_quote("http://127.0.0.1:3000"),
            "http://127.0.0.1:3000"
        );
        assert_eq!(shell_quote("/a b/c"), "'/a b/c'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[cfg(unix)]
    #[test]
    fn written_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("sandbox-envfile-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sandbox.env");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, "A=1\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "A=1\n");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
