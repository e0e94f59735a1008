//! Counts DynamoDB calls made through a client, per operation, with an SDK interceptor. Tests
//! assert the cost of each store operation with it (one call for a transition, won or lost);
//! benches report it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use aws_sdk_dynamodb::Client;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeSerializationInterceptorContextRef, BeforeTransmitInterceptorContextRef,
};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// Calls (executions, as the caller made them) and attempts (including SDK retries).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallCounts {
    pub calls: BTreeMap<String, u64>,
    pub attempts: BTreeMap<String, u64>,
}

impl CallCounts {
    pub fn total_calls(&self) -> u64 {
        self.calls.values().sum()
    }

    pub fn total_attempts(&self) -> u64 {
        self.attempts.values().sum()
    }

    /// Calls of one operation, e.g. `"TransactWriteItems"`.
    pub fn calls_of(&self, operation: &str) -> u64 {
        self.calls.get(operation).copied().unwrap_or(0)
    }
}

/// Cheap to clone; every clone shares the counts.
#[derive(Debug, Clone, Default)]
pub struct CallCounter {
    counts: Arc<Mutex<CallCounts>>,
}

impl CallCounter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn snapshot(&self) -> CallCounts {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn reset(&self) {
        *self.counts.lock().unwrap_or_else(PoisonError::into_inner) = CallCounts::default();
    }

    /// Counts made while `f` runs (the counter is not reset; concurrent users share it).
    pub async fn measure<T>(&self, f: impl Future<Output = T>) -> (T, CallCounts) {
        let before = self.snapshot();
        let out = f.await;
        let after = self.snapshot();
        let diff = |a: &BTreeMap<String, u64>, b: &BTreeMap<String, u64>| {
            a.iter()
                .filter_map(|(k, v)| {
                    let d = v - b.get(k).copied().unwrap_or(0);
                    (d > 0).then(|| (k.clone(), d))
                })
                .collect()
        };
        let counts = CallCounts {
            calls: diff(&after.calls, &before.calls),
            attempts: diff(&after.attempts, &before.attempts),
        };
        (out, counts)
    }

    fn bump(&self, attempt: bool, cfg: &ConfigBag) {
        let op = cfg
            .load::<Metadata>()
            .map(|m| m.name().to_owned())
            .unwrap_or_else(|| "unknown".to_owned());
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let map = if attempt {
            &mut counts.attempts
        } else {
            &mut counts.calls
        };
        *map.entry(op).or_default() += 1;
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    // Once per execution, like `read_before_execution`, but late enough that the operation's
    // name is in the config bag (client interceptors' `read_before_execution` runs first).
    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.bump(false, cfg);
        Ok(())
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.bump(true, cfg);
        Ok(())
    }
}

/// The same client with `interceptor` added (the original is untouched).
pub fn with_interceptor(client: &Client, interceptor: impl Intercept + 'static) -> Client {
    Client::from_conf(
        client
            .config()
            .to_builder()
            .interceptor(interceptor)
            .build(),
    )
}
