//! Scheduled functions (timeout-sweeper, event-dispatcher, bill-reconciler): one
//! [`ScheduledJob`], invoked by an EventBridge schedule on Lambda, a timer trigger on SCF, or
//! once from the command line locally, with the invocation's deadline (and event).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use lambda_http::lambda_runtime::{self, LambdaEvent, service_fn};
use serde_json::Value;
use time::OffsetDateTime;

use super::{EventError, Platform, RuntimeError, scf};

/// What started a run; logged with the run's summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// An EventBridge rule's `Scheduled Event` (SAM's `Schedule` event source).
    EventBridge { id: String, time: String },
    /// An SCF timer trigger (`{"Type": "Timer", "TriggerName", "Time", "Message"}`).
    ScfTimer { trigger_name: String, time: String },
    /// A batch of a DynamoDB stream (a Lambda event source mapping): the records' keys.
    DynamoDbStream { records: Vec<StreamRecord> },
    /// Any other invocation: `aws lambda invoke`, an SCF test event, or the command line.
    Manual,
}

/// One record of a DynamoDB stream batch, as much of it as a job needs: its sequence number
/// (what a partial batch failure names) and the item's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRecord {
    pub sequence_number: String,
    /// `INSERT`, `MODIFY` or `REMOVE`.
    pub event_name: String,
    pub pk: String,
    pub sk: String,
}

impl StreamRecord {
    fn parse(record: &Value) -> Result<StreamRecord, EventError> {
        let dynamodb = record
            .get("dynamodb")
            .ok_or_else(|| EventError::new("stream record without \"dynamodb\""))?;
        let key = |name: &str| {
            dynamodb
                .pointer(&format!("/Keys/{name}/S"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| EventError::new(format!("stream record without key {name}")))
        };
        Ok(StreamRecord {
            sequence_number: dynamodb
                .get("SequenceNumber")
                .and_then(Value::as_str)
                .ok_or_else(|| EventError::new("stream record without SequenceNumber"))?
                .to_owned(),
            event_name: record
                .get("eventName")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            pk: key("pk")?,
            sk: key("sk")?,
        })
    }
}

impl Trigger {
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::EventBridge { .. } => "eventbridge",
            Trigger::ScfTimer { .. } => "scf_timer",
            Trigger::DynamoDbStream { .. } => "dynamodb_stream",
            Trigger::Manual => "manual",
        }
    }

    /// Classifies an invocation event. A scheduled job runs whatever the event (an operator
    /// may invoke it by hand), except an HTTP one, which means a route points at it by mistake.
    pub fn from_event(event: &Value) -> Result<Trigger, EventError> {
        let str_of = |key: &str| {
            event
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        if event.get("httpMethod").is_some()
            || event.get("routeKey").is_some()
            || event.get("requestContext").is_some()
        {
            return Err(EventError::new(
                "an HTTP event reached a scheduled function; give it a schedule or timer trigger",
            ));
        }
        if str_of("detail-type") == "Scheduled Event" {
            return Ok(Trigger::EventBridge {
                id: str_of("id"),
                time: str_of("time"),
            });
        }
        if let Some(records) = event.get("Records").and_then(Value::as_array)
            && records
                .first()
                .and_then(|r| r.get("eventSource"))
                .and_then(Value::as_str)
                == Some("aws:dynamodb")
        {
            return Ok(Trigger::DynamoDbStream {
                records: records
                    .iter()
                    .map(StreamRecord::parse)
                    .collect::<Result<_, _>>()?,
            });
        }
        if scf::is_timer_event(event) {
            return Ok(Trigger::ScfTimer {
                trigger_name: str_of("TriggerName"),
                time: str_of("Time"),
            });
        }
        Ok(Trigger::Manual)
    }
}

/// A run that failed as a whole: the invocation ends in an error carrying its summary, so the
/// platform counts it (Lambda's `Errors`, a failed SCF invocation) and the function's errors
/// alarm fires; locally the process exits non-zero after printing the summary.
#[derive(Debug, thiserror::Error)]
#[error("{summary}")]
pub struct JobFailed {
    pub summary: Value,
}

/// What every scheduled function implements: one run, returning its summary as JSON.
#[async_trait]
pub trait ScheduledJob: Send + Sync + 'static {
    async fn run(&self, trigger: Trigger, deadline: Option<OffsetDateTime>) -> Value;

    /// [`run`](Self::run) with the invocation's event as received, for a job whose event can
    /// carry a parameter (the bill-reconciler's `bill_date`) or whose run can fail as a whole
    /// (the bill-reconciler's); the others ignore the event and report their failures by
    /// their summaries' counts and metrics.
    async fn run_event(
        &self,
        event: &Value,
        trigger: Trigger,
        deadline: Option<OffsetDateTime>,
    ) -> Result<Value, JobFailed> {
        let _ = event;
        Ok(self.run(trigger, deadline).await)
    }
}

/// Serves `job` on the platform the environment names. Locally (no runtime API) it runs
/// once, with the deadline `--deadline SECONDS` sets, prints the summary and returns.
pub async fn serve_schedule(job: Arc<dyn ScheduledJob>) -> Result<(), RuntimeError> {
    match Platform::from_env()? {
        Platform::Lambda => serve_lambda_schedule(job).await,
        Platform::Scf { runtime_api_base } => serve_scf_schedule(job, &runtime_api_base).await,
        Platform::Http { .. } => {
            let (event, rest) = local_event(std::env::args().skip(1))?;
            let deadline = local_deadline(rest.into_iter())?;
            tracing::info!(mode = "local", "ready");
            match job.run_event(&event, Trigger::Manual, deadline).await {
                Ok(summary) => {
                    println!("{summary}");
                    Ok(())
                }
                Err(failed) => {
                    println!("{}", failed.summary);
                    Err(RuntimeError::JobFailed)
                }
            }
        }
    }
}

/// `--event JSON` (the invocation's event when run by hand, e.g. `{"bill_date":
/// "2026-12-06"}`; absent: `{}`) and the other arguments.
pub fn local_event(
    args: impl Iterator<Item = String>,
) -> Result<(Value, Vec<String>), RuntimeError> {
    let mut event = Value::Object(Default::default());
    let mut rest = Vec::new();
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let value = match arg.strip_prefix("--event") {
            Some("") => args.next().unwrap_or_default(),
            Some(v) if v.starts_with('=') => v[1..].to_owned(),
            _ => {
                rest.push(arg);
                continue;
            }
        };
        event = serde_json::from_str(&value).map_err(|e| RuntimeError::InvalidEnv {
            name: "--event",
            value: value.chars().take(64).collect(),
            reason: format!("not JSON: {e}"),
        })?;
    }
    Ok((event, rest))
}

/// `--deadline SECONDS` (fractions allowed) from now; absent: no deadline.
pub fn local_deadline(
    mut args: impl Iterator<Item = String>,
) -> Result<Option<OffsetDateTime>, RuntimeError> {
    let invalid = |value: String, reason: &str| RuntimeError::InvalidEnv {
        name: "--deadline",
        value,
        reason: reason.to_owned(),
    };
    let mut deadline = None;
    while let Some(arg) = args.next() {
        let value = match arg.strip_prefix("--deadline") {
            Some("") => args.next().unwrap_or_default(),
            Some(v) if v.starts_with('=') => v[1..].to_owned(),
            _ => {
                return Err(invalid(
                    arg,
                    "unknown argument; usage: [--deadline SECONDS]",
                ));
            }
        };
        let seconds: f64 = value
            .parse()
            .ok()
            .filter(|s: &f64| s.is_finite() && *s > 0.0 && *s < 86_400.0)
            .ok_or_else(|| invalid(value.clone(), "not a number of seconds (0-86400)"))?;
        deadline = Some(OffsetDateTime::now_utc() + time::Duration::seconds_f64(seconds));
    }
    Ok(deadline)
}

async fn serve_lambda_schedule(job: Arc<dyn ScheduledJob>) -> Result<(), RuntimeError> {
    tracing::info!(mode = "lambda", "ready");
    let service = service_fn(move |event: LambdaEvent<Value>| {
        let job = Arc::clone(&job);
        async move {
            let trigger = Trigger::from_event(&event.payload)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            let deadline = i64::try_from(event.context.deadline).ok().and_then(|ms| {
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
            });
            job.run_event(&event.payload, trigger, deadline)
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        }
    });
    lambda_runtime::run(service)
        .await
        .map_err(|e| RuntimeError::Lambda(e.to_string()))
}

async fn serve_scf_schedule(
    job: Arc<dyn ScheduledJob>,
    runtime_api_base: &str,
) -> Result<(), RuntimeError> {
    scf::serve_scf_events(runtime_api_base, move |invocation| {
        let job = Arc::clone(&job);
        async move {
            let event: Value = serde_json::from_slice(&invocation.event)
                .map_err(|e| format!("event is not JSON: {e}"))?;
            let trigger = Trigger::from_event(&event).map_err(|e| e.to_string())?;
            let summary = job
                .run_event(&event, trigger, invocation.deadline)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<Bytes, String>(Bytes::from(summary.to_string()))
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn eventbridge_scheduled_event() {
        // The example event of the EventBridge docs ("Amazon EventBridge events", scheduled).
        let event = json!({
            "version": "0",
            "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": "123456789012",
            "time": "2015-10-08T16:53:06Z",
            "region": "us-east-1",
            "resources": ["arn:aws:events:us-east-1:123456789012:rule/my-scheduled-rule"],
            "detail": {}
        });
        assert_eq!(
            Trigger::from_event(&event).unwrap(),
            Trigger::EventBridge {
                id: "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa".into(),
                time: "2015-10-08T16:53:06Z".into()
            }
        );
    }

    #[test]
    fn scf_timer_events_in_both_spellings() {
        for ty in ["Timer", "timer"] {
            let event = json!({
                "Type": ty,
                "TriggerName": "EveryMinute",
                "Time": "2026-11-24T04:01:00Z",
                "Message": ""
            });
            assert_eq!(
                Trigger::from_event(&event).unwrap(),
                Trigger::ScfTimer {
                    trigger_name: "EveryMinute".into(),
                    time: "2026-11-24T04:01:00Z".into()
                },
                "{ty}"
            );
        }
    }

    #[test]
    fn dynamodb_stream_batches() {
        let event = json!({"Records": [
            {"eventID": "1", "eventName": "INSERT", "eventSource": "aws:dynamodb",
             "dynamodb": {"Keys": {"pk": {"S": "EVENT#evt_A_2"}, "sk": {"S": "EVENT"}},
                          "NewImage": {"attempts": {"N": "0"}},
                          "SequenceNumber": "111", "StreamViewType": "NEW_AND_OLD_IMAGES"}},
            {"eventID": "2", "eventName": "MODIFY", "eventSource": "aws:dynamodb",
             "dynamodb": {"Keys": {"pk": {"S": "EVENT#evt_B_3"}, "sk": {"S": "EVENT"}},
                          "SequenceNumber": "222"}}
        ]});
        let Trigger::DynamoDbStream { records } = Trigger::from_event(&event).unwrap() else {
            panic!("a stream batch")
        };
        assert_eq!(records.len(), 2);
        assert_eq!(
            records[0],
            StreamRecord {
                sequence_number: "111".into(),
                event_name: "INSERT".into(),
                pk: "EVENT#evt_A_2".into(),
                sk: "EVENT".into(),
            }
        );
        assert_eq!(records[1].sequence_number, "222");
        let keyless = json!({"Records": [{"eventSource": "aws:dynamodb",
            "dynamodb": {"SequenceNumber": "1"}}]});
        assert!(Trigger::from_event(&keyless).is_err());
    }

    #[test]
    fn manual_and_http_events() {
        assert_eq!(Trigger::from_event(&json!({})).unwrap(), Trigger::Manual);
        assert_eq!(
            Trigger::from_event(&json!({"detail-type": "Object Created"})).unwrap(),
            Trigger::Manual
        );
        assert!(Trigger::from_event(&json!({"httpMethod": "GET", "path": "/"})).is_err());
        assert!(Trigger::from_event(&json!({"version": "2.0", "routeKey": "$default"})).is_err());
    }

    #[test]
    fn event_argument() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (event, rest) = local_event(args(&[]).into_iter()).unwrap();
        assert_eq!((event, rest), (json!({}), Vec::<String>::new()));
        let (event, rest) = local_event(
            args(&[
                "--deadline",
                "5",
                "--event",
                r#"{"bill_date":"2026-12-06"}"#,
            ])
            .into_iter(),
        )
        .unwrap();
        assert_eq!(event, json!({"bill_date": "2026-12-06"}));
        assert_eq!(rest, args(&["--deadline", "5"]));
        assert!(local_event(args(&["--event={"]).into_iter()).is_err());
    }

    #[test]
    fn deadline_argument() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(local_deadline(args(&[]).into_iter()).unwrap(), None);
        let before = OffsetDateTime::now_utc();
        let d = local_deadline(args(&["--deadline", "2.5"]).into_iter())
            .unwrap()
            .unwrap();
        assert!(d >= before + time::Duration::milliseconds(2500));
        assert!(d <= OffsetDateTime::now_utc() + time::Duration::milliseconds(2500));
        assert!(
            local_deadline(args(&["--deadline=1"]).into_iter())
                .unwrap()
                .is_some()
        );
        for bad in [
            &["--deadline", "soon"][..],
            &["--deadline", "-1"],
            &["--deadline"],
            &["--every", "5"],
        ] {
            assert!(local_deadline(args(bad).into_iter()).is_err(), "{bad:?}");
        }
    }
}
