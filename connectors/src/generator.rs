//! A deterministic, seeded generator of realistic NYC subway turnstile readings.
//!
//! Hundreds of stations with a skewed number of turnstiles each, busy morning and evening rush
//! hours (more readings, larger counts), quiet nights, about 1% audit readings, and a chosen
//! fraction of readings whose event time lies 1 to 90 minutes in the past, so that they arrive
//! after later readings and land in windows that already have rows. The same seed always yields
//! the same readings, on every machine (the PRNG is SplitMix64, implemented here).

use tidewater_dataflows::decode::{reading_json_head, write_reading_json_tail};
use tidewater_dataflows::{EventTime, Reading};

/// Real station names first; numbered streets and avenues fill up the rest.
const STATION_NAMES: &[&str] = &[
    "TIMES SQ-42 ST",
    "GRD CNTRL-42 ST",
    "34 ST-HERALD SQ",
    "14 ST-UNION SQ",
    "FULTON ST",
    "34 ST-PENN STA",
    "59 ST COLUMBUS",
    "86 ST",
    "CANAL ST",
    "CHAMBERS ST",
    "FLUSHING-MAIN",
    "JKSN HT-ROOSVLT",
    "ATL AV-BARCLAY",
    "W 4 ST-WASH SQ",
    "LEXINGTON AV/53",
    "JAY ST-METROTEC",
    "BOROUGH HALL",
    "COURT SQ",
    "QUEENS PLAZA",
    "JAMAICA CENTER",
    "125 ST",
    "96 ST",
    "72 ST",
    "BEDFORD AV",
    "DEKALB AV",
    "PARKCHESTER",
    "CROWN HTS-UTICA",
    "CONEY IS-STILLW",
    "BOWLING GREEN",
    "WALL ST",
    "RECTOR ST",
    "CORTLANDT ST",
    "WORLD TRADE CTR",
    "CITY HALL",
    "SPRING ST",
    "ASTOR PL",
    "BLEECKER ST",
    "BROADWAY-LAFAY",
    "DELANCEY/ESSEX",
    "EAST BROADWAY",
    "BRIGHTON BEACH",
    "SHEEPSHEAD BAY",
    "KINGS HWY",
    "FOREST HILLS 71",
    "KEW GARDENS",
    "SUTPHIN-ARCHER",
    "WOODHAVEN BLVD",
    "ELMHURST AV",
    "ROOSEVELT ISLND",
    "TRAMWAY",
    "FORDHAM RD",
    "BEDFORD PK BLVD",
    "WOODLAWN",
    "PELHAM BAY PARK",
    "HUNTS POINT AV",
    "YANKEE STADIUM",
    "HOYT-SCHER",
    "NEVINS ST",
    "PROSPECT PARK",
    "NEWKIRK PLAZA",
    "BAY RIDGE-95 ST",
    "SUNSET PARK",
    "MYRTLE-WYCKOFF",
    "HALSEY ST",
    "BROADWAY JCT",
    "EUCLID AV",
    "ROCKAWAY BLVD",
    "FAR ROCKAWAY",
    "HOWARD BCH JFK",
    "INWOOD-207 ST",
    "DYCKMAN ST",
    "168 ST-WASH HTS",
    "145 ST",
    "116 ST-COLUMBIA",
    "CATHEDRAL PKWY",
];

const LINES: &[u8] = b"1234567ACEBDFMGJZLNQRW";

/// Parameters of a generated feed.
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratorConfig {
    pub seed: u64,
    /// Fraction (0..=1) of readings whose event time is 1-90 minutes in the past.
    pub late_fraction: f64,
    pub stations: usize,
    /// Event time of the first reading (default: Monday 2024-03-04 00:00 UTC).
    pub start: EventTime,
    /// Average gap between readings outside rush hours, in microseconds of event time.
    pub mean_gap_us: i64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 42,
            late_fraction: 0.02,
            stations: 400,
            start: 1_709_510_400_000_000,
            mean_gap_us: 200_000,
        }
    }
}

impl GeneratorConfig {
    /// The `mean_gap_us` of a live feed of `rate` readings per second: event time advances about
    /// as fast as the wall clock (faster in rush hours, slower at night). The default gap makes a
    /// backfill, whose event time runs thousands of times faster than the clock.
    pub fn live_gap_us(rate: f64) -> i64 {
        (1e6 / rate).max(1.0) as i64
    }
}

/// SplitMix64: tiny, fast, and stable forever (unlike `rand`'s `StdRng`), so seeds reproduce.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

#[derive(Clone, Debug)]
struct Station {
    name: String,
    linename: String,
    division: &'static str,
    /// Relative size: scales counts at this station.
    busyness: f64,
}

#[derive(Clone, Debug)]
struct Turnstile {
    ca: String,
    unit: String,
    scp: String,
    station: usize,
    /// Its readings' JSON up to the timestamp (see [`reading_json_head`]).
    json_head: String,
}

/// One reading as drawn from the generator's random stream.
struct Draw {
    turnstile: usize,
    ts: EventTime,
    desc: &'static str,
    entries: i64,
    exits: i64,
}

/// An endless iterator of readings; take as many as you need.
#[derive(Clone, Debug)]
pub struct TurnstileGenerator {
    config: GeneratorConfig,
    rng: SplitMix64,
    stations: Vec<Station>,
    turnstiles: Vec<Turnstile>,
    clock: EventTime,
}

impl TurnstileGenerator {
    pub fn new(config: GeneratorConfig) -> Self {
        let mut rng = SplitMix64(config.seed);
        let stations = station_list(&mut rng, config.stations.max(1));
        let mut turnstiles = Vec::new();
        for (index, station) in stations.iter().enumerate() {
            // Busy stations have many more turnstiles: 2 to about 40.
            let count = 2 + (station.busyness * 8.0) as usize;
            for booth in 0..count {
                let ca = format!("{}{:03}", (b'A' + (index % 26) as u8) as char, index);
                let unit = format!("R{:03}", index);
                let scp = format!("{:02}-00-{:02}", booth / 8, booth % 8);
                let json_head = reading_json_head(
                    &ca,
                    &unit,
                    &scp,
                    &station.name,
                    &station.linename,
                    station.division,
                );
                turnstiles.push(Turnstile {
                    ca,
                    unit,
                    scp,
                    station: index,
                    json_head,
                });
            }
        }
        TurnstileGenerator {
            clock: config.start,
            config,
            rng,
            stations,
            turnstiles,
        }
    }

    /// Number of distinct turnstiles (Kafka keys) this generator uses.
    pub fn turnstile_count(&self) -> usize {
        self.turnstiles.len()
    }

    /// Appends the next reading's JSON to `out`: the same text as `next().to_json()`, but
    /// from each turnstile's pre-rendered head, without building the reading's strings.
    pub fn next_json(&mut self, out: &mut String) {
        let draw = self.draw();
        out.push_str(&self.turnstiles[draw.turnstile].json_head);
        write_reading_json_tail(out, draw.ts, draw.desc, draw.entries, draw.exits);
    }

    fn draw(&mut self) -> Draw {
        let rush = rush_factor(self.clock);
        let gap = (self.config.mean_gap_us as f64 * 2.0 * self.rng.unit() / rush) as i64;
        self.clock += gap.max(1);
        // Pick a turnstile: busy stations own more turnstiles, so they report more often.
        let turnstile = self.rng.below(self.turnstiles.len() as u64) as usize;
        let station = &self.stations[self.turnstiles[turnstile].station];
        let mean = 6.0 * rush * station.busyness;
        let entries = (mean * 2.0 * self.rng.unit()).round() as i64;
        let exits = (mean * 1.6 * self.rng.unit()).round() as i64;
        let mut ts = self.clock;
        if self.rng.unit() < self.config.late_fraction {
            ts -= (1 + self.rng.below(90) as i64) * 60_000_000;
        }
        let desc = if self.rng.below(100) == 0 {
            "RECOVR AUD"
        } else {
            "REGULAR"
        };
        Draw {
            turnstile,
            ts,
            desc,
            entries,
            exits,
        }
    }
}

/// Ridership multiplier by hour of day in New York (UTC-5): rush hours 7-9 and 17-19 on
/// weekdays, quiet nights, a flatter weekend.
fn rush_factor(ts: EventTime) -> f64 {
    let local_seconds = ts / 1_000_000 - 5 * 3600;
    let hour = local_seconds.div_euclid(3600).rem_euclid(24);
    let weekday = (local_seconds.div_euclid(86_400) + 3).rem_euclid(7); // 1970-01-01 was a Thursday
    let weekend = weekday >= 5;
    match (weekend, hour) {
        (_, 0..=4) => 0.15,
        (false, 7..=9) | (false, 17..=19) => 3.0,
        (true, 11..=19) => 1.2,
        _ => 0.8,
    }
}

fn station_list(rng: &mut SplitMix64, count: usize) -> Vec<Station> {
    let mut names: Vec<String> = STATION_NAMES.iter().map(|s| s.to_string()).collect();
    let mut n = 1;
    while names.len() < count {
        for suffix in ["ST", "AV"] {
            let name = format!("{n} {suffix}");
            if !names.contains(&name) {
                names.push(name);
            }
        }
        n += 1;
    }
    names.truncate(count);
    names
        .into_iter()
        .enumerate()
        .map(|(rank, name)| {
            let line_count = 1 + rng.below(4) as usize;
            let mut lines: Vec<u8> = (0..line_count)
                .map(|_| LINES[rng.below(LINES.len() as u64) as usize])
                .collect();
            lines.sort_unstable();
            lines.dedup();
            let division = if lines[0].is_ascii_digit() {
                "IRT"
            } else if b"ACEBDFMG".contains(&lines[0]) {
                "IND"
            } else {
                "BMT"
            };
            Station {
                name,
                linename: String::from_utf8(lines).expect("ascii line names"),
                division,
                // Zipf-like: the famous hubs are far busier than the long tail.
                busyness: 4.0 / (1.0 + rank as f64).sqrt() + 0.2 * rng.unit(),
            }
        })
        .collect()
}

impl Iterator for TurnstileGenerator {
    type Item = Reading;

    fn next(&mut self) -> Option<Reading> {
        let Draw {
            turnstile,
            ts,
            desc,
            entries,
            exits,
        } = self.draw();
        let turnstile = &self.turnstiles[turnstile];
        let station = &self.stations[turnstile.station];
        Some(Reading {
            ca: turnstile.ca.clone(),
            unit: turnstile.unit.clone(),
            scp: turnstile.scp.clone(),
            station: station.name.clone(),
            linename: station.linename.clone(),
            division: station.division.to_owned(),
            ts,
            desc: desc.to_owned(),
            entries,
            exits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_json_writes_what_to_json_writes() {
        let config = GeneratorConfig {
            late_fraction: 0.1,
            ..GeneratorConfig::default()
        };
        let mut readings = TurnstileGenerator::new(config.clone());
        let mut json = TurnstileGenerator::new(config);
        let mut text = String::new();
        for _ in 0..20_000 {
            text.clear();
            json.next_json(&mut text);
            assert_eq!(text, readings.next().unwrap().to_json());
        }
    }

    #[test]
    fn same_seed_same_readings_different_seed_different_readings() {
        let a: Vec<_> = TurnstileGenerator::new(GeneratorConfig::default())
            .take(1000)
            .collect();
        let b: Vec<_> = TurnstileGenerator::new(GeneratorConfig::default())
            .take(1000)
            .collect();
        let c: Vec<_> = TurnstileGenerator::new(GeneratorConfig {
            seed: 7,
            ..Default::default()
        })
        .take(1000)
        .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn feed_is_realistic_enough() {
        // 5 s between readings: 50,000 readings span about three days.
        let config = GeneratorConfig {
            late_fraction: 0.1,
            mean_gap_us: 5_000_000,
            ..Default::default()
        };
        let generator = TurnstileGenerator::new(config);
        assert!(generator.turnstile_count() > 1000);
        let readings: Vec<_> = generator.take(50_000).collect();
        let stations: std::collections::BTreeSet<_> = readings.iter().map(|r| &r.station).collect();
        assert!(stations.len() >= 300, "{} stations", stations.len());
        let out_of_order = readings.windows(2).filter(|w| w[1].ts < w[0].ts).count();
        assert!(out_of_order > 2_000, "{out_of_order} out-of-order readings");
        assert!(readings.iter().all(|r| r.entries >= 0 && r.exits >= 0));
        // Rush hour (8-9 local = 13-14 UTC) is busier than the night (2-3 local = 7-8 UTC).
        let hour_entries = |h: i64| -> i64 {
            readings
                .iter()
                .filter(|r| (r.ts / 3_600_000_000).rem_euclid(24) == h)
                .map(|r| r.entries)
                .sum()
        };
        assert!(hour_entries(13) > 5 * hour_entries(7));
    }
}
