//! The table definition, from the one source of truth `infra/table.json` (a CreateTable
//! request plus its TimeToLiveSpecification), and `create_table` that applies it through the
//! DynamoDB API: the embedded engine, moto and the sandbox all build the same table.

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TimeToLiveSpecification,
};
use serde::Deserialize;

use super::StoreError;
use super::error::from_sdk;

/// `infra/table.json`, compiled in so no binary depends on a file at run time.
pub const TABLE_DEFINITION_JSON: &str = include_str!("../../../infra/table.json");

/// Stands for the real name in `TableName`; the template and the tests supply their own.
pub const TABLE_NAME_PLACEHOLDER: &str = "${ORDERS_TABLE}";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct TableDefinition {
    pub table_name: String,
    pub attribute_definitions: Vec<AttributeDef>,
    pub key_schema: Vec<KeyElement>,
    pub global_secondary_indexes: Vec<IndexDef>,
    pub billing_mode: String,
    pub stream_specification: StreamSpec,
    pub time_to_live_specification: TtlSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct AttributeDef {
    pub attribute_name: String,
    pub attribute_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct KeyElement {
    pub attribute_name: String,
    pub key_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct IndexDef {
    pub index_name: String,
    pub key_schema: Vec<KeyElement>,
    pub projection: ProjectionDef,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct ProjectionDef {
    pub projection_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct StreamSpec {
    pub stream_enabled: bool,
    pub stream_view_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct TtlSpec {
    pub attribute_name: String,
    pub enabled: bool,
}

fn setup(e: impl std::fmt::Display) -> StoreError {
    StoreError::Setup(e.to_string())
}

impl TableDefinition {
    /// The compiled-in `infra/table.json`.
    pub fn load() -> Result<TableDefinition, StoreError> {
        serde_json::from_str(TABLE_DEFINITION_JSON)
            .map_err(|e| setup(format!("infra/table.json: {e}")))
    }

    fn key_schema(elems: &[KeyElement]) -> Result<Vec<KeySchemaElement>, StoreError> {
        elems
            .iter()
            .map(|k| {
                KeySchemaElement::builder()
                    .attribute_name(&k.attribute_name)
                    .key_type(KeyType::from(k.key_type.as_str()))
                    .build()
                    .map_err(setup)
            })
            .collect()
    }
}

/// Creates `table_name` as `infra/table.json` defines it, then enables TTL on `ttl` (a
/// separate API call: CreateTable has no TTL parameter).
pub async fn create_table(client: &Client, table_name: &str) -> Result<(), StoreError> {
    let def = TableDefinition::load()?;
    let attributes = def
        .attribute_definitions
        .iter()
        .map(|a| {
            AttributeDefinition::builder()
                .attribute_name(&a.attribute_name)
                .attribute_type(ScalarAttributeType::from(a.attribute_type.as_str()))
                .build()
                .map_err(setup)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let indexes = def
        .global_secondary_indexes
        .iter()
        .map(|g| {
            GlobalSecondaryIndex::builder()
                .index_name(&g.index_name)
                .set_key_schema(Some(TableDefinition::key_schema(&g.key_schema)?))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::from(
                            g.projection.projection_type.as_str(),
                        ))
                        .build(),
                )
                .build()
                .map_err(setup)
        })
        .collect::<Result<Vec<_>, _>>()?;
    client
        .create_table()
        .table_name(table_name)
        .set_attribute_definitions(Some(attributes))
        .set_key_schema(Some(TableDefinition::key_schema(&def.key_schema)?))
        .set_global_secondary_indexes(Some(indexes))
        .billing_mode(BillingMode::from(def.billing_mode.as_str()))
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(def.stream_specification.stream_enabled)
                .stream_view_type(StreamViewType::from(
                    def.stream_specification.stream_view_type.as_str(),
                ))
                .build()
                .map_err(setup)?,
        )
        .send()
        .await
        .map_err(|e| from_sdk("CreateTable", e))?;
    client
        .update_time_to_live()
        .table_name(table_name)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .attribute_name(&def.time_to_live_specification.attribute_name)
                .enabled(def.time_to_live_specification.enabled)
                .build()
                .map_err(setup)?,
        )
        .send()
        .await
        .map_err(|e| from_sdk("UpdateTimeToLive", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definition_matches_design_section_4() {
        let d = TableDefinition::load().unwrap();
        assert_eq!(d.table_name, TABLE_NAME_PLACEHOLDER);
        let keys: Vec<_> = d
            .key_schema
            .iter()
            .map(|k| (k.attribute_name.as_str(), k.key_type.as_str()))
            .collect();
        assert_eq!(keys, [("pk", "HASH"), ("sk", "RANGE")]);
        let idx: Vec<_> = d
            .global_secondary_indexes
            .iter()
            .map(|g| {
                (
                    g.index_name.as_str(),
                    g.key_schema[0].attribute_name.as_str(),
                    g.key_schema[1].attribute_name.as_str(),
                    g.projection.projection_type.as_str(),
                )
            })
            .collect();
        assert_eq!(
            idx,
            [
                ("gsi1", "gsi1pk", "gsi1sk", "ALL"),
                ("gsi2", "gsi2pk", "gsi2sk", "ALL")
            ]
        );
        assert!(
            d.attribute_definitions
                .iter()
                .all(|a| a.attribute_type == "S")
        );
        assert_eq!(d.attribute_definitions.len(), 6);
        assert_eq!(d.billing_mode, "PAY_PER_REQUEST");
        assert_eq!(
            d.stream_specification.stream_view_type,
            "NEW_AND_OLD_IMAGES"
        );
        assert_eq!(d.time_to_live_specification.attribute_name, "ttl");
        assert!(d.time_to_live_specification.enabled);
    }
}
