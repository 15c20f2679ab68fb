//! A route's table schema and partition spec, from the route's staged-object schema.
//!
//! Field ids are stable: a new table numbers the columns 1.. in the route's order; an existing
//! table keeps its ids, found by name, and a column the route added since is appended with the
//! next id (an Iceberg schema update, never a renumbering). A column whose type changed is
//! refused, naming the route and the column.

use arrow_schema::{DataType, Schema as ArrowSchema, TimeUnit};
use iceberg::spec::{NestedField, PrimitiveType, Schema, Transform, Type, UnboundPartitionSpec};
use streamload_core::route::iceberg::{IcebergPlan, PartitionBy};

use crate::error::TableError;

/// The Iceberg type of one staged column (the loaders' Arrow types).
pub fn iceberg_type(route: &str, column: &str, ty: &DataType) -> Result<Type, TableError> {
    let p = match ty {
        DataType::Utf8 | DataType::LargeUtf8 => PrimitiveType::String,
        DataType::Int32 => PrimitiveType::Int,
        DataType::Int64 => PrimitiveType::Long,
        DataType::Float64 => PrimitiveType::Double,
        DataType::Boolean => PrimitiveType::Boolean,
        DataType::Date32 => PrimitiveType::Date,
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => PrimitiveType::Timestamptz,
        DataType::Timestamp(TimeUnit::Microsecond, None) => PrimitiveType::Timestamp,
        DataType::Decimal128(p, s) if *s >= 0 => PrimitiveType::Decimal {
            precision: u32::from(*p),
            scale: u32::from(s.unsigned_abs()),
        },
        other => {
            return Err(TableError::Config(format!(
                "route {route:?}: column {column:?} has a type the table cannot hold ({other})"
            )))
        }
    };
    Ok(Type::Primitive(p))
}

/// The schema of a new table: the staged columns in order, ids from 1.
pub fn new_table_schema(route: &str, staged: &ArrowSchema) -> Result<Schema, TableError> {
    let mut fields = Vec::with_capacity(staged.fields().len());
    for (i, f) in staged.fields().iter().enumerate() {
        let id = i32::try_from(i + 1).unwrap_or(i32::MAX);
        let ty = iceberg_type(route, f.name(), f.data_type())?;
        fields.push(if f.is_nullable() {
            NestedField::optional(id, f.name(), ty).into()
        } else {
            NestedField::required(id, f.name(), ty).into()
        });
    }
    Schema::builder()
        .with_schema_id(0)
        .with_fields(fields)
        .build()
        .map_err(|e| TableError::Config(format!("route {route:?}: the table schema: {e}")))
}

/// The route's columns the existing table lacks (to add, optional), after checking that the
/// ones it has kept their types.
pub fn missing_columns(
    route: &str,
    table: &Schema,
    staged: &ArrowSchema,
) -> Result<Vec<(String, Type)>, TableError> {
    let mut missing = Vec::new();
    for f in staged.fields() {
        let want = iceberg_type(route, f.name(), f.data_type())?;
        match table.field_by_name(f.name()) {
            Some(have) if *have.field_type == want => {}
            Some(have) => {
                return Err(TableError::Config(format!(
                    "route {route:?}: column {:?} is {} in the table but {} in the route; a changed type needs a new table or a column of a new name",
                    f.name(),
                    have.field_type,
                    want
                )))
            }
            None => missing.push((f.name().clone(), want)),
        }
    }
    Ok(missing)
}

/// The partition spec: `day` or `hour` of the plan's partition column.
pub fn partition_spec(
    route: &str,
    schema: &Schema,
    plan: &IcebergPlan,
) -> Result<UnboundPartitionSpec, TableError> {
    let column = &plan.partition_column;
    let field = schema.field_by_name(column).ok_or_else(|| {
        TableError::Config(format!(
            "route {route:?}: partition column {column:?} is not in the table"
        ))
    })?;
    let (transform, suffix) = match plan.partition {
        PartitionBy::Day => (Transform::Day, "day"),
        PartitionBy::Hour => (Transform::Hour, "hour"),
    };
    UnboundPartitionSpec::builder()
        .with_spec_id(0)
        .add_partition_field(field.id, format!("{column}_{suffix}"), transform)
        .map(|b| b.build())
        .map_err(|e| TableError::Config(format!("route {route:?}: the partition spec: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::Field;

    fn staged(fields: Vec<Field>) -> ArrowSchema {
        ArrowSchema::new(fields)
    }

    #[test]
    fn a_new_table_numbers_columns_in_order_and_keeps_requiredness() {
        // Given the staged schema of a route
        let s = staged(vec![
            Field::new("order_id", DataType::Utf8, false),
            Field::new("amount", DataType::Decimal128(12, 2), true),
            Field::new(
                "placed_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ]);
        // When the table schema is made
        let schema = new_table_schema("orders", &s).unwrap();
        // Then ids follow the columns, types map, requiredness is kept
        let ids: Vec<(i32, &str, bool)> = schema
            .as_struct()
            .fields()
            .iter()
            .map(|f| (f.id, f.name.as_str(), f.required))
            .collect();
        assert_eq!(
            ids,
            [
                (1, "order_id", true),
                (2, "amount", false),
                (3, "placed_at", true)
            ]
        );
        assert_eq!(
            *schema.field_by_name("amount").unwrap().field_type,
            Type::Primitive(PrimitiveType::Decimal {
                precision: 12,
                scale: 2
            })
        );
    }

    #[test]
    fn an_added_column_is_missing_and_a_changed_type_is_refused_by_name() {
        let table = new_table_schema(
            "orders",
            &staged(vec![Field::new("order_id", DataType::Utf8, false)]),
        )
        .unwrap();
        let grown = staged(vec![
            Field::new("order_id", DataType::Utf8, false),
            Field::new("note", DataType::Utf8, true),
        ]);
        assert_eq!(
            missing_columns("orders", &table, &grown).unwrap(),
            [("note".to_string(), Type::Primitive(PrimitiveType::String))]
        );
        let changed = staged(vec![Field::new("order_id", DataType::Int64, false)]);
        let e = missing_columns("orders", &table, &changed)
            .unwrap_err()
            .to_string();
        assert!(e.contains("route \"orders\": column \"order_id\""), "{e}");
    }
}
