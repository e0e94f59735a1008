//! The deployment files against the repository: template.yaml (AWS SAM) and the Tencent
//! SCF configs.

mod deploy_support;

mod template;
mod tencent_config;
