//! Great-circle distance in kilometres between where the request comes from
//! and an entity's stored location (e.g. a driver's last known position).

use wafer_sdk::math::{asin, cos, sin, sqrt};

const EARTH_RADIUS_KM: f64 = 6371.0088;

#[wafer_sdk::transform(output = "distance_km")]
pub fn haversine_distance(
    request_lat: f64,
    request_lon: f64,
    driver_lat: f64,
    driver_lon: f64,
) -> Option<f64> {
    let valid =
        |lat: f64, lon: f64| (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon);
    if !valid(request_lat, request_lon) || !valid(driver_lat, driver_lon) {
        return None;
    }
    let (phi1, phi2) = (request_lat.to_radians(), driver_lat.to_radians());
    let d_phi = phi2 - phi1;
    let d_lambda = (driver_lon - request_lon).to_radians();
    let a = sin(d_phi / 2.0).powi(2) + cos(phi1) * cos(phi2) * sin(d_lambda / 2.0).powi(2);
    Some(2.0 * EARTH_RADIUS_KM * asin(sqrt(a.min(1.0))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paris_to_london() {
        let km = haversine_distance(48.8566, 2.3522, 51.5074, -0.1278).unwrap();
        assert!((km - 343.5).abs() < 1.0, "{km}");
    }

    #[test]
    fn same_point_is_zero_and_bad_coordinates_are_null() {
        assert_eq!(haversine_distance(10.0, 20.0, 10.0, 20.0), Some(0.0));
        assert_eq!(haversine_distance(91.0, 0.0, 0.0, 0.0), None);
        assert_eq!(haversine_distance(f64::NAN, 0.0, 0.0, 0.0), None);
    }
}
