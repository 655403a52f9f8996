//! The JSON Schemas of everything the agent sends and receives over MQTT, generated from the
//! Rust types that serialise it (ADR 0027): one schema per event type's payload and one per
//! wire message. This is the one list of them; `relaisctl schemas --out DIR` writes it to
//! `docs/schemas/`, and `tests/event_schemas.rs` checks the committed files against it and a
//! store day's real events against the files.
//!
//! What the agent sends (events, `evt`, `state`, `facts`) is described as it *serialises* it
//! (schemars' serialize contract): a field left out when empty (`skip_serializing_if`) is
//! optional, every other field is required. What it receives (`ack`, `rpl/{stream}`) is
//! described as it *accepts* it (the deserialize contract): a field with a default may be left
//! out. A strict message (`deny_unknown_fields`) admits no other property either way.

use crate::domain::{
    ConsentChanged, CouponRedeemed, CycleCountRecorded, LoyaltyRecorded, PickupCollected,
    PickupPrepared, ReturnRecorded, SaleRecorded, ShipStep, ShipmentRecorded,
    StockMovementRecorded,
};
use crate::outbox::{Envelope, RetentionClass};
use crate::read_events::{CardRead, DeviceStatusChanged, ScanRead, TagArrived, TagDeparted};
use crate::replica::delta::Delta;
use crate::sync::wire::{Ack, AgentState, EventBatch, FactsProgress, RplControl, RplHeartbeat};
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// One event type the agent can emit, with its payload's schema.
pub struct EventSchema {
    /// The envelope's `type`.
    pub event_type: &'static str,
    pub class: RetentionClass,
    /// A store fact a till or back office records through the API (a `domain::StoreFact`);
    /// `false` for what devices produce.
    pub api_fact: bool,
    pub schema: Schema,
}

/// One wire message (or part of one) with its schema; written to `messages/{name}.json`.
pub struct MessageSchema {
    pub name: &'static str,
    /// The topic it travels on, under `relais/v1/{store}/{agent}/`.
    pub topic: &'static str,
    pub direction: Direction,
    pub schema: Schema,
}

/// Which side of a message the agent is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The agent publishes it: described as serialised.
    Up,
    /// The agent subscribes to it: described as accepted.
    Down,
}

fn root<T: JsonSchema>(title: &str, direction: Direction) -> Schema {
    let settings = match direction {
        Direction::Up => SchemaSettings::draft2020_12().for_serialize(),
        Direction::Down => SchemaSettings::draft2020_12().for_deserialize(),
    };
    let mut schema = SchemaGenerator::new(settings).into_root_schema_for::<T>();
    schema.insert("title".into(), Value::String(title.into()));
    schema
}

/// Adds `keyword: value` to the schema of one of the root's properties: what one event type of
/// a payload type shared by several says more precisely (a loyalty burn's points are negative).
fn narrow(schema: &mut Schema, property: &str, keyword: &str, value: Value) {
    if let Some(Value::Object(p)) = schema.pointer_mut(&format!("/properties/{property}")) {
        p.insert(keyword.into(), value);
    }
}

fn event<T: JsonSchema>(
    event_type: &'static str,
    class: RetentionClass,
    api_fact: bool,
) -> EventSchema {
    EventSchema {
        event_type,
        class,
        api_fact,
        schema: root::<T>(event_type, Direction::Up),
    }
}

/// Every event type the agent can emit: the store facts of `domain::StoreFact::event_type`
/// and what the read consumer records (`reads.rs`).
pub fn events() -> Vec<EventSchema> {
    use RetentionClass::{StoreFact, Telemetry};
    let mut earned = event::<LoyaltyRecorded>("loyalty.earned", StoreFact, true);
    narrow(&mut earned.schema, "points", "minimum", 1.into());
    let mut burned = event::<LoyaltyRecorded>("loyalty.burned", StoreFact, true);
    narrow(&mut burned.schema, "points", "maximum", (-1).into());
    let mut events = vec![
        event::<StockMovementRecorded>("stock.movement", StoreFact, true),
        event::<SaleRecorded>("sale.recorded", StoreFact, true),
        event::<ReturnRecorded>("return.recorded", StoreFact, true),
        event::<CycleCountRecorded>("stock.cycle_count", StoreFact, true),
        earned,
        burned,
        event::<PickupCollected>("pickup.collected", StoreFact, true),
        event::<PickupPrepared>("pickup.prepared", StoreFact, true),
        event::<ConsentChanged>("consent.changed", StoreFact, true),
        event::<CouponRedeemed>("coupon.redeemed", StoreFact, true),
    ];
    for step in ShipStep::ALL {
        let mut shipment = event::<ShipmentRecorded>(step.event_type(), StoreFact, true);
        narrow(&mut shipment.schema, "step", "const", step.name().into());
        if step == ShipStep::Shipped {
            if let Some(Value::Array(required)) = shipment.schema.get_mut("required") {
                required.push("tracking".into());
            }
        } else if let Some(Value::Object(p)) = shipment.schema.get_mut("properties") {
            // Only a shipped step carries the parcel's tracking.
            p.insert("tracking".into(), Value::Bool(false));
        }
        events.push(shipment);
    }
    events.extend([
        event::<TagArrived>("rfid.arrived", StoreFact, false),
        event::<TagDeparted>("rfid.departed", StoreFact, false),
        event::<ScanRead>("device.scan", Telemetry, false),
        event::<CardRead>("device.card", Telemetry, false),
        event::<DeviceStatusChanged>("device.status", Telemetry, false),
    ]);
    events
}

fn message<T: JsonSchema>(
    name: &'static str,
    topic: &'static str,
    direction: Direction,
) -> MessageSchema {
    MessageSchema {
        name,
        topic,
        direction,
        schema: root::<T>(name, direction),
    }
}

/// Every wire message, and the envelope of one event.
pub fn messages() -> Vec<MessageSchema> {
    vec![
        message::<AgentState>("state", "state", Direction::Up),
        message::<EventBatch>("evt", "evt", Direction::Up),
        message::<Envelope>("envelope", "evt", Direction::Up),
        message::<FactsProgress>("facts", "facts", Direction::Up),
        message::<Ack>("ack", "ack", Direction::Down),
        message::<Delta>("rpl.delta", "rpl/{stream}", Direction::Down),
        message::<RplControl>("rpl.control", "rpl/{stream}", Direction::Down),
        message::<RplHeartbeat>("rpl.heartbeat", "rpl/{stream}", Direction::Down),
    ]
}

/// `Uuid` as the envelope carries it.
pub fn uuid(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({
        "type": "string",
        "format": "uuid",
        "pattern": "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
    })
}

/// Every published file: (path under the schemas directory, its text). Keys sorted at every
/// level and pretty-printed, so a file changes only when its schema does.
pub fn files() -> Vec<(String, String)> {
    let events = events()
        .into_iter()
        .map(|e| (format!("events/{}.json", e.event_type), e.schema));
    let messages = messages()
        .into_iter()
        .map(|m| (format!("messages/{}.json", m.name), m.schema));
    events
        .chain(messages)
        .map(|(path, schema)| (path, render(schema.to_value())))
        .collect()
}

fn render(value: Value) -> String {
    // serde_json keeps insertion order when a dependency enables `preserve_order`: sort here.
    fn sorted(value: Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<(String, Value)> = map.into_iter().collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k, sorted(v)))
                        .collect::<Map<String, Value>>(),
                )
            }
            Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
            other => other,
        }
    }
    let mut text = serde_json::to_string_pretty(&sorted(value)).unwrap_or_default();
    text.push('\n');
    text
}

#[derive(Debug, thiserror::Error)]
pub enum SchemasError {
    #[error("cannot write {path}: {source}. Check that the directory is writable")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Writes every schema under `dir` (`events/`, `messages/`) and removes the `.json` files there
/// that no longer describe anything; returns the files written.
pub fn write_all(dir: &Path) -> Result<Vec<PathBuf>, SchemasError> {
    let files = files();
    let mut written = Vec::with_capacity(files.len());
    for sub in ["events", "messages"] {
        let sub_dir = dir.join(sub);
        std::fs::create_dir_all(&sub_dir).map_err(|source| SchemasError::Write {
            path: sub_dir.clone(),
            source,
        })?;
        let entries = std::fs::read_dir(&sub_dir).map_err(|source| SchemasError::Write {
            path: sub_dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let listed = files.iter().any(|(p, _)| *p == format!("{sub}/{name}"));
            if name.ends_with(".json") && !listed {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(|source| SchemasError::Write {
                    path: path.clone(),
                    source,
                })?;
            }
        }
    }
    for (relative, text) in files {
        let path = dir.join(&relative);
        std::fs::write(&path, text).map_err(|source| SchemasError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_and_message_is_listed_once() {
        let files = files();
        let mut paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        let n = paths.len();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), n, "a name listed twice");
        assert_eq!(events().len(), 18);
    }

    #[test]
    fn a_payload_schema_requires_what_is_always_serialised_and_not_what_may_be_left_out() {
        let sale = events()
            .into_iter()
            .find(|e| e.event_type == "sale.recorded")
            .map(|e| e.schema.to_value());
        let sale = sale.unwrap_or_default();
        let required = sale["required"].as_array().cloned().unwrap_or_default();
        assert!(required.contains(&"lines".into()), "{sale}");
        assert!(required.contains(&"receipt".into()), "{sale}");
        assert!(!required.contains(&"customer_id".into()), "{sale}");
        let batch = messages()
            .into_iter()
            .find(|m| m.name == "evt")
            .map(|m| m.schema.to_value())
            .unwrap_or_default();
        assert_eq!(batch["additionalProperties"], false, "{batch}");
    }
}
