//! The deployment files against the repository: template.yaml (AWS SAM) and the Tencent
//! SCF configs.

mod deploy_support;

mod features;
mod template;
mod tencent_config;
