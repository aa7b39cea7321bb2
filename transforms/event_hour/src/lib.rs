//! Time features of a request's event time: the hour it falls in and its
//! epoch seconds. Used by the tests to check that a timestamp means the
//! same on every path (requests, pushes, `wafer transform test`).

use wafer_sdk::Timestamp;

const MICROS_PER_HOUR: i64 = 3_600_000_000;

#[derive(wafer_sdk::Outputs)]
pub struct EventHour {
    /// The start of the hour the event falls in.
    pub event_hour: Timestamp,
    /// Whole seconds since the epoch (rounded down).
    pub event_epoch_seconds: i64,
}

#[wafer_sdk::transform]
pub fn event_hour(event_time: Timestamp) -> EventHour {
    EventHour {
        event_hour: Timestamp {
            micros: event_time.micros.div_euclid(MICROS_PER_HOUR) * MICROS_PER_HOUR,
        },
        event_epoch_seconds: event_time.micros.div_euclid(1_000_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hours_and_seconds() {
        let t = event_hour(Timestamp {
            micros: 1_700_000_000_500_000,
        });
        assert_eq!(t.event_epoch_seconds, 1_700_000_000);
        assert_eq!(t.event_hour.micros, 1_699_999_200_000_000);
        let before_epoch = event_hour(Timestamp { micros: -1 });
        assert_eq!(before_epoch.event_epoch_seconds, -1);
        assert_eq!(before_epoch.event_hour.micros, -MICROS_PER_HOUR);
    }
}
