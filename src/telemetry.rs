//! Log setup: human-readable text or one JSON object per line. Each HTTP request runs in a
//! span carrying its `request_id`, so every line logged while serving it carries the id too:
//! JSON lines list every enclosing span (`spans`, outermost first), because a nested span
//! (an APIC call, a fabric read) is the `span` of its lines and would hide the request's.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber; `RUST_LOG`, when set, wins over `filter`.
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(filter));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(true),
            )
            .try_init(),
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer()).try_init(),
    };
    // A second init (tests, benches) keeps the first subscriber; that is fine.
    drop(result);
}
