//! Secrets at start-up: when `SECRETS_ID` names an AWS Secrets Manager secret (name or ARN),
//! its `SecretString`, a JSON object of strings, is fetched once and laid over the environment,
//! for the secret variables only ([`SECRET_VARIABLES`]); no error ever shows a secret's value.

use std::collections::HashMap;

use aws_sdk_secretsmanager::error::DisplayErrorContext;

use crate::config::{self, ConfigError, Env};
use crate::store::{AwsAccess, ClientSettings, sdk_config};

/// The variable naming the secret. Unset: the environment is used as it is.
pub const SECRETS_ID: &str = "SECRETS_ID";

/// Endpoint override for Secrets Manager (tests against moto; a VPC endpoint URL).
pub const SECRETS_ENDPOINT: &str = "SECRETS_ENDPOINT";

/// The only keys a secret may hold: the variables of DESIGN.md section 2 that are secrets.
pub const SECRET_VARIABLES: [&str; 8] = [
    "WXPAY_MCH_PRIVATE_KEY",
    "WXPAY_APIV3_KEY",
    "WX_APP_SECRET",
    "SESSION_SIGNING_KEY",
    "MERCHANT_API_TOKEN",
    "WEBHOOK_SECRET",
    "WX_PUSH_TOKEN",
    "WX_PUSH_AES_KEY",
];

fn bad(problem: impl Into<String>) -> ConfigError {
    ConfigError {
        variable: SECRETS_ID,
        problem: problem.into(),
    }
}

/// `env` with the secret variables of the secret `SECRETS_ID` names in front of it; `env`
/// unchanged when `SECRETS_ID` is unset. One GetSecretValue call, with the region, credentials
/// and time budget of the DynamoDB client (`AWS_REGION`, `AWS_ACCESS_KEY_ID`, ...).
pub async fn resolve(env: Env) -> Result<Env, ConfigError> {
    let Some(id) = env.get(SECRETS_ID) else {
        return Ok(env);
    };
    let id = id.trim().to_owned();
    let access = AwsAccess {
        region: config::aws_region(&env),
        credentials: config::aws_credentials(&env).map(|(key_id, secret, token)| {
            (
                key_id,
                secret.expose().clone(),
                token.map(|t| t.expose().clone()),
            )
        }),
    };
    let endpoint = env.get(SECRETS_ENDPOINT);
    let sdk = sdk_config(endpoint.as_deref(), &access, &ClientSettings::default()).await;
    let client = aws_sdk_secretsmanager::Client::new(&sdk);
    let out = client
        .get_secret_value()
        .secret_id(&id)
        .send()
        .await
        .map_err(|e| {
            bad(format!(
                "cannot read secret {id}: {}",
                DisplayErrorContext(&e)
            ))
        })?;
    let text = out.secret_string().ok_or_else(|| {
        bad(format!(
            "secret {id} has no SecretString (binary secrets are not read)"
        ))
    })?;
    let values = parse(text).map_err(|problem| bad(format!("secret {id}: {problem}")))?;
    Ok(env.overlay(values))
}

/// The secret's JSON object as variables. The problem names a key or a position, never a value
/// (serde_json's own messages may quote the input, so they are not passed on).
pub fn parse(secret_string: &str) -> Result<HashMap<String, String>, String> {
    let value: serde_json::Value = serde_json::from_str(secret_string).map_err(|e| {
        format!(
            "SecretString is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    let serde_json::Value::Object(object) = value else {
        return Err("SecretString must be a JSON object of strings".into());
    };
    let mut values = HashMap::with_capacity(object.len());
    for (key, value) in object {
        if !SECRET_VARIABLES.contains(&key.as_str()) {
            return Err(format!(
                "unknown key {key:?} (allowed: {})",
                SECRET_VARIABLES.join(", ")
            ));
        }
        let serde_json::Value::String(value) = value else {
            return Err(format!("the value of {key} must be a string"));
        };
        values.insert(key, value);
    }
    Ok(values)
}

/// Equal bytes, in time that depends only on the lengths: how a presented secret (a token,
/// a signature) is compared with the expected one.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(constant_time_eq(b"secret-token", b"secret-token"));
        assert!(!constant_time_eq(b"secret-token", b"secret-tokex"));
        assert!(!constant_time_eq(b"secret-token", b"secret-token-longer"));
        assert!(!constant_time_eq(b"", b"x"));
    }

    const VALUE: &str = "s3cr3t-VALUE-never-shown";

    #[test]
    fn parses_an_object_of_allowed_keys() {
        let v = parse(&format!(
            r#"{{"WXPAY_APIV3_KEY":"{VALUE}","WX_APP_SECRET":"x\ny"}}"#
        ))
        .unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v["WXPAY_APIV3_KEY"], VALUE);
        assert_eq!(v["WX_APP_SECRET"], "x\ny");
        assert!(parse("{}").unwrap().is_empty());
    }

    #[test]
    fn refuses_unknown_keys_naming_the_key_only() {
        let e = parse(&format!(r#"{{"ORDERS_TABLE":"{VALUE}"}}"#)).unwrap_err();
        assert!(e.contains("\"ORDERS_TABLE\""), "{e}");
        assert!(!e.contains(VALUE), "{e}");
    }

    #[test]
    fn refuses_non_objects_and_non_strings_without_quoting_them() {
        for bad in [
            format!(r#""{VALUE}""#),
            format!(r#"["{VALUE}"]"#),
            format!(r#"{{"WXPAY_APIV3_KEY":["{VALUE}"]}}"#),
            format!(r#"{{"WXPAY_APIV3_KEY":{{"k":"{VALUE}"}}}}"#),
            format!(r#"{{"WXPAY_APIV3_KEY":"{VALUE}""#),
            format!(r#"{{"WXPAY_APIV3_KEY":"{VALUE}",}}"#),
            VALUE.to_string(),
        ] {
            let e = parse(&bad).unwrap_err();
            assert!(!e.contains(VALUE), "{bad} -> {e}");
        }
        assert!(
            parse(r#"{"WXPAY_APIV3_KEY":5}"#)
                .unwrap_err()
                .contains("WXPAY_APIV3_KEY must be a string")
        );
    }

    #[tokio::test]
    async fn unset_secrets_id_leaves_the_environment_alone() {
        let env = Env::from_pairs([("WXPAY_APIV3_KEY", "from-env")]);
        let env = resolve(env).await.unwrap();
        assert_eq!(env.get("WXPAY_APIV3_KEY").as_deref(), Some("from-env"));
    }
}
