//! Building DynamoDB requests: expression placeholders, the Put and Update actions of a
//! transaction, and reading a refusal (which condition failed, and the item that failed it).

use std::collections::HashMap;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, Put, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, Update,
};

use super::items::Item;
use crate::store::StoreError;
use crate::store::error::{from_sdk, reason_is_transient};

/// Placeholders for an expression: `#name` for attribute names (so reserved words like
/// `status`, `name` and `ttl` are safe) and `:key` for values.
#[derive(Default)]
pub(super) struct Expr {
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Expr {
    pub(super) fn name(&mut self, name: &str) -> String {
        let ph = format!("#{name}");
        self.names.insert(ph.clone(), name.to_owned());
        ph
    }

    pub(super) fn value(&mut self, key: &str, v: AttributeValue) -> String {
        let ph = format!(":{key}");
        self.values.insert(ph.clone(), v);
        ph
    }

    #[allow(clippy::type_complexity)]
    pub(super) fn into_parts(
        self,
    ) -> (
        Option<HashMap<String, String>>,
        Option<HashMap<String, AttributeValue>>,
    ) {
        (
            (!self.names.is_empty()).then_some(self.names),
            (!self.values.is_empty()).then_some(self.values),
        )
    }
}

pub(super) fn build_err(e: aws_smithy_types::error::operation::BuildError) -> StoreError {
    StoreError::Invalid(format!("request construction: {e}"))
}

pub(super) fn is_ccf(reason: &CancellationReason) -> bool {
    reason.code() == Some("ConditionalCheckFailed")
}

/// A cancelled transaction with no condition failure: transient if any reason says so.
pub(super) fn unexplained_cancel(reasons: &[CancellationReason]) -> StoreError {
    let codes: Vec<&str> = reasons.iter().map(|r| r.code().unwrap_or("?")).collect();
    let message = format!("cancellation reasons {codes:?}");
    if codes.iter().any(|c| reason_is_transient(c)) {
        StoreError::TransactionConflict {
            op: "TransactWriteItems",
            message,
        }
    } else {
        StoreError::Rejected {
            op: "TransactWriteItems",
            code: "TransactionCanceled".into(),
            message,
        }
    }
}

/// A single-item write's error that may be "condition failed", carrying the old item when
/// the engine returned it (ReturnValuesOnConditionCheckFailure = ALL_OLD).
pub(super) trait ConditionFailure {
    fn is_condition_failure(&self) -> bool;
    fn into_old_item(self) -> Option<Item>;
}

macro_rules! condition_failure {
    ($err:ident) => {
        impl ConditionFailure for $err {
            fn is_condition_failure(&self) -> bool {
                matches!(self, $err::ConditionalCheckFailedException(_))
            }
            fn into_old_item(self) -> Option<Item> {
                match self {
                    $err::ConditionalCheckFailedException(e) => e.item,
                    _ => None,
                }
            }
        }
    };
}
condition_failure!(PutItemError);
condition_failure!(UpdateItemError);
condition_failure!(DeleteItemError);

/// `Ok(Ok(output))`, `Ok(Err(old item))` when the condition failed, or a store error.
pub(super) fn conditional<O, E>(
    op: &'static str,
    result: Result<O, SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>>,
) -> Result<Result<O, Option<Item>>, StoreError>
where
    E: ConditionFailure
        + aws_sdk_dynamodb::error::ProvideErrorMetadata
        + std::error::Error
        + Send
        + Sync
        + 'static,
{
    match result {
        Ok(o) => Ok(Ok(o)),
        Err(SdkError::ServiceError(ctx)) if ctx.err().is_condition_failure() => {
            Ok(Err(ctx.into_err().into_old_item()))
        }
        Err(e) => Err(from_sdk(op, e)),
    }
}

pub(super) fn update_action(
    table: &str,
    key: Item,
    update: String,
    condition: String,
    e: Expr,
) -> Result<TransactWriteItem, StoreError> {
    let (names, values) = e.into_parts();
    let update = Update::builder()
        .table_name(table)
        .set_key(Some(key))
        .update_expression(update)
        .condition_expression(condition)
        .set_expression_attribute_names(names)
        .set_expression_attribute_values(values)
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .build()
        .map_err(build_err)?;
    Ok(TransactWriteItem::builder().update(update).build())
}

pub(super) fn put_action(
    table: &str,
    item: Item,
    condition: String,
    e: Expr,
) -> Result<TransactWriteItem, StoreError> {
    let (names, values) = e.into_parts();
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(item))
        .condition_expression(condition)
        .set_expression_attribute_names(names)
        .set_expression_attribute_values(values)
        .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
        .build()
        .map_err(build_err)?;
    Ok(TransactWriteItem::builder().put(put).build())
}
