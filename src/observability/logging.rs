//! Logging: JSON lines by default, human-readable with `DEV_MODE=true`. `RUST_LOG` filters.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global tracing subscriber. Call once, first thing in `main`.
pub fn init_logging(dev_mode: bool) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,kube_client=warn,kube_runtime=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    if dev_mode {
        registry
            .with(tracing_subscriber::fmt::layer().with_target(false))
            .init();
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .init();
    }
}
