//! The merchant's webhook (DESIGN.md section 10): Standard Webhooks 1.0 signatures, the retry
//! schedule, and one signed delivery attempt. The outbox and the dispatcher that decide what
//! to send and when live elsewhere; this module only knows how a delivery looks on the wire.
//!
//! - [`signature`]: `whsec_` secrets, `sign` for `webhook-signature`, `verify` for receivers.
//! - [`schedule`]: when a failed event is attempted again, and when it is dead.
//! - [`delivery`]: the HTTP attempt and how its answer is classified.

pub mod delivery;
pub mod schedule;
pub mod signature;

pub use delivery::{Attempt, AttemptOutcome, Webhook};
pub use schedule::{MAX_EVENT_AGE, honour_retry_after, next_attempt_at};
pub use signature::{VerifyError, WebhookError, WebhookSecret, WebhookSecrets, sign, verify};
