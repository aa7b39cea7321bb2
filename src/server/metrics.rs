//! Prometheus metrics: requests and latency per endpoint and per feature
//! service, online values by status, errors by kind, on-demand transform
//! runs, rows, time and failures per view, materialization rows and
//! freshness per view, scheduled materialization ticks by outcome, feature
//! log rows by outcome, transform modules compiled or loaded from the cache,
//! and the latest skew and drift figures per feature.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::online::{FieldStatus, OnDemandRun, OnlineResponse};
use crate::registry::MaterializationRecord;
use crate::transform::TransformError;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    feature_service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViewLabels {
    view: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransformFailureLabels {
    view: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LogLabels {
    feature_service: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeatureLabels {
    feature_service: String,
    feature: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScheduledLabels {
    outcome: &'static str,
}

/// What one tick of scheduled materialization did on this server.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(feature = "offline"), allow(dead_code))]
pub enum ScheduledOutcome {
    /// This server took the tick and materialized every view.
    Ran,
    /// Another server sharing the store took the tick.
    OtherReplica,
    /// This server took the tick, but another run held a view's claim.
    Busy,
    Failed,
}

impl ScheduledOutcome {
    fn label(self) -> &'static str {
        match self {
            ScheduledOutcome::Ran => "ran",
            ScheduledOutcome::OtherReplica => "other_replica",
            ScheduledOutcome::Busy => "busy",
            ScheduledOutcome::Failed => "failed",
        }
    }
}

type FeatureGauge = Family<FeatureLabels, Gauge<f64, AtomicU64>>;
type Latency = Family<EndpointLabels, Histogram, fn() -> Histogram>;
type ServiceLatency = Family<ServiceLabels, Histogram, fn() -> Histogram>;
type ViewLatency = Family<ViewLabels, Histogram, fn() -> Histogram>;

fn transform_histogram() -> Histogram {
    // 1 us to about 1 s.
    Histogram::new(exponential_buckets(0.000_001, 2.0, 21))
}

fn latency_histogram() -> Histogram {
    // 20 us to about 5 s.
    Histogram::new(exponential_buckets(0.000_02, 2.0, 18))
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Latency,
    service_requests: Family<ServiceLabels, Counter>,
    service_latency: ServiceLatency,
    online_values: Family<StatusLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    on_demand_runs: Family<ViewLabels, Counter>,
    on_demand_rows: Family<ViewLabels, Counter>,
    on_demand_duration: ViewLatency,
    on_demand_failures: Family<TransformFailureLabels, Counter>,
    #[cfg_attr(not(feature = "offline"), allow(dead_code))]
    materialized_rows: Family<ViewLabels, Counter>,
    materialized_until: Family<ViewLabels, Gauge<f64, AtomicU64>>,
    freshness: Family<ViewLabels, Gauge<f64, AtomicU64>>,
    #[cfg_attr(not(feature = "offline"), allow(dead_code))]
    scheduled: Family<ScheduledLabels, Counter>,
    feature_log_rows: Family<LogLabels, Counter>,
    module_loads: Family<SourceLabels, Counter>,
    /// Held while the log counters are brought up to date, so two scrapes
    /// never add the same rows twice.
    render_lock: std::sync::Mutex<()>,
    /// One gauge family per [`crate::monitor::GAUGES`] entry, by name.
    monitor_families: Vec<(&'static str, FeatureGauge)>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("wafer");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Latency::new_with_constructor(latency_histogram);
        let service_requests = Family::<ServiceLabels, Counter>::default();
        let service_latency = ServiceLatency::new_with_constructor(latency_histogram);
        let online_values = Family::<StatusLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let on_demand_runs = Family::<ViewLabels, Counter>::default();
        let on_demand_rows = Family::<ViewLabels, Counter>::default();
        let on_demand_duration = ViewLatency::new_with_constructor(transform_histogram);
        let on_demand_failures = Family::<TransformFailureLabels, Counter>::default();
        let materialized_rows = Family::<ViewLabels, Counter>::default();
        let materialized_until = Family::<ViewLabels, Gauge<f64, AtomicU64>>::default();
        let freshness = Family::<ViewLabels, Gauge<f64, AtomicU64>>::default();
        let scheduled = Family::<ScheduledLabels, Counter>::default();
        let feature_log_rows = Family::<LogLabels, Counter>::default();
        let module_loads = Family::<SourceLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by endpoint and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by endpoint",
            latency.clone(),
        );
        registry.register(
            "feature_service_requests",
            "Online lookups by feature service",
            service_requests.clone(),
        );
        registry.register(
            "feature_service_request_duration_seconds",
            "Online lookup latency by feature service",
            service_latency.clone(),
        );
        registry.register(
            "online_values",
            "Values returned by online lookups, by status",
            online_values.clone(),
        );
        registry.register("errors", "Error responses by kind", errors.clone());
        registry.register(
            "on_demand_transform_runs",
            "On-demand transform runs in lookups, per on-demand view",
            on_demand_runs.clone(),
        );
        registry.register(
            "on_demand_transform_rows",
            "Rows computed by on-demand transforms in lookups, per on-demand view",
            on_demand_rows.clone(),
        );
        registry.register(
            "on_demand_transform_duration_seconds",
            "Time in an on-demand view's transform per lookup",
            on_demand_duration.clone(),
        );
        registry.register(
            "on_demand_transform_failures",
            "Lookups failed by an on-demand view's transform, by view and kind (input, fuel, timeout, memory, stack, trap, failed, output, ...)",
            on_demand_failures.clone(),
        );
        registry.register(
            "materialized_rows",
            "Rows written to the online store by materialization, per view",
            materialized_rows.clone(),
        );
        registry.register(
            "materialized_until_timestamp_seconds",
            "End of the newest materialized window, per view",
            materialized_until.clone(),
        );
        registry.register(
            "feature_freshness_seconds",
            "Seconds since the end of the newest materialized window, per view",
            freshness.clone(),
        );
        registry.register(
            "scheduled_materializations",
            "Ticks of scheduled materialization (--materialize-every) on this server, by outcome (ran, other_replica, busy, failed)",
            scheduled.clone(),
        );
        registry.register(
            "feature_log_rows",
            "Rows of feature services with logging, by outcome: queued by lookups, dropped (the writer's queue was full), written to published files, failed (a file could not be written)",
            feature_log_rows.clone(),
        );
        registry.register(
            "transform_module_loads",
            "Transform modules this server compiled from WebAssembly (uploads included, whether or not they then passed their checks) or loaded from the verified compiled cache, by source",
            module_loads.clone(),
        );
        let mut monitor_families = Vec::new();
        for (name, help) in crate::monitor::GAUGES {
            let family = FeatureGauge::default();
            registry.register(*name, *help, family.clone());
            monitor_families.push((*name, family));
        }
        Metrics {
            feature_log_rows,
            module_loads,
            render_lock: std::sync::Mutex::new(()),
            monitor_families,
            registry,
            requests,
            latency,
            service_requests,
            service_latency,
            online_values,
            errors,
            on_demand_runs,
            on_demand_rows,
            on_demand_duration,
            on_demand_failures,
            materialized_rows,
            materialized_until,
            freshness,
            scheduled,
        }
    }

    pub fn observe_request(
        &self,
        endpoint: &str,
        status: u16,
        elapsed: Duration,
        error: Option<&'static str>,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.to_string(),
            })
            .observe(elapsed.as_secs_f64());
        if let Some(kind) = error {
            self.errors.get_or_create(&ErrorLabels { kind }).inc();
        }
    }

    pub fn observe_service(&self, service: &str, elapsed: Duration) {
        let labels = ServiceLabels {
            feature_service: service.to_string(),
        };
        self.service_requests.get_or_create(&labels).inc();
        self.service_latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Counts every returned feature value by status (join keys excluded).
    pub fn observe_lookup(&self, response: &OnlineResponse, join_keys: usize) {
        let mut counts = [0u64; 4];
        for column in response.results.iter().skip(join_keys) {
            for status in &column.statuses {
                counts[*status as usize] += 1;
            }
        }
        for status in [
            FieldStatus::Present,
            FieldStatus::NullValue,
            FieldStatus::NotFound,
            FieldStatus::OutsideMaxAge,
        ] {
            let count = counts[status as usize];
            if count > 0 {
                self.online_values
                    .get_or_create(&StatusLabels {
                        status: status.as_str(),
                    })
                    .inc_by(count);
            }
        }
    }

    /// Counts and times the on-demand transforms a lookup ran.
    pub fn observe_on_demand(&self, runs: &[OnDemandRun]) {
        for run in runs {
            let labels = ViewLabels {
                view: run.view.clone(),
            };
            self.on_demand_runs.get_or_create(&labels).inc();
            self.on_demand_rows
                .get_or_create(&labels)
                .inc_by(run.rows as u64);
            self.on_demand_duration
                .get_or_create(&labels)
                .observe(run.elapsed.as_secs_f64());
        }
    }

    /// Counts a lookup an on-demand view's transform failed.
    pub fn observe_on_demand_failure(&self, view: &str, error: &TransformError) {
        self.on_demand_failures
            .get_or_create(&TransformFailureLabels {
                view: view.to_string(),
                kind: error.kind(),
            })
            .inc();
    }

    #[cfg_attr(not(feature = "offline"), allow(dead_code))]
    pub fn observe_materialization(&self, record: &MaterializationRecord) {
        self.materialized_rows
            .get_or_create(&ViewLabels {
                view: record.view.clone(),
            })
            .inc_by(record.rows_written);
    }

    #[cfg_attr(not(feature = "offline"), allow(dead_code))]
    pub fn observe_scheduled(&self, outcome: ScheduledOutcome) {
        self.scheduled
            .get_or_create(&ScheduledLabels {
                outcome: outcome.label(),
            })
            .inc();
    }

    /// The text exposition, with freshness computed from `history` now,
    /// the feature log's counts from `log`, the transform runtime's module
    /// loads, and the latest reports' figures.
    pub fn render(
        &self,
        history: &[MaterializationRecord],
        log: Option<&crate::feature_log::FeatureLog>,
        loads: Option<crate::transform::ModuleLoads>,
        figures: &[crate::monitor::Figure],
    ) -> String {
        let _guard = self.render_lock.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(loads) = loads {
            for (source, now) in [("compiled", loads.compiled), ("cache", loads.from_cache)] {
                let counter = self.module_loads.get_or_create(&SourceLabels { source });
                counter.inc_by(now.saturating_sub(counter.get()));
            }
        }
        for (service, counts) in log.map(|l| l.counters()).unwrap_or_default() {
            use std::sync::atomic::Ordering::Relaxed;
            for (outcome, count) in [
                ("queued", &counts.queued),
                ("dropped", &counts.dropped),
                ("written", &counts.written),
                ("failed", &counts.failed),
            ] {
                let counter = self.feature_log_rows.get_or_create(&LogLabels {
                    feature_service: service.clone(),
                    outcome,
                });
                let now = count.load(Relaxed);
                counter.inc_by(now.saturating_sub(counter.get()));
            }
        }
        // Only the latest reports' figures: a feature a newer report
        // skipped, or a service removed, has none.
        for (_, family) in &self.monitor_families {
            family.clear();
        }
        for figure in figures {
            if let Some((_, family)) = self
                .monitor_families
                .iter()
                .find(|(n, _)| *n == figure.metric)
            {
                family
                    .get_or_create(&FeatureLabels {
                        feature_service: figure.feature_service.clone(),
                        feature: figure.feature.clone(),
                    })
                    .set(figure.value);
            }
        }
        let now = chrono::Utc::now();
        let mut newest: std::collections::BTreeMap<&str, chrono::DateTime<chrono::Utc>> =
            Default::default();
        for record in history {
            let end = newest.entry(record.view.as_str()).or_insert(record.end);
            *end = (*end).max(record.end);
        }
        for (view, end) in newest {
            let labels = ViewLabels {
                view: view.to_string(),
            };
            self.materialized_until
                .get_or_create(&labels)
                .set(end.timestamp_millis() as f64 / 1000.0);
            self.freshness
                .get_or_create(&labels)
                .set((now - end).num_milliseconds() as f64 / 1000.0);
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}
