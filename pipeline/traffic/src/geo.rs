//! Where traffic comes from: countries, time zones, languages, IP addresses
//! and client user agents.
//!
//! Identity features compare billing country with request geography and look
//! at IP prefixes shared across accounts, so benign traffic needs coherent
//! geography (a German user writes German from a German residential address
//! during German daytime) for those features to mean anything.

use rand::rngs::StdRng;
use rand::Rng;

use super::dist::{int, pick, weighted};

/// A sign-up country with what follows from it.
pub struct Country {
    pub code: &'static str,
    /// UTC offsets (hours) of its population centres, in November.
    pub utc_offsets: &'static [f64],
    /// Prompt languages with weights.
    pub languages: &'static [(&'static str, f64)],
    /// First octets of residential ISP ranges.
    pub residential_octets: &'static [u8],
    /// Share of API users from this country.
    pub weight: f64,
}

pub const COUNTRIES: &[Country] = &[
    Country {
        code: "US",
        utc_offsets: &[-8.0, -7.0, -6.0, -5.0, -5.0],
        languages: &[("en", 0.93), ("es", 0.07)],
        residential_octets: &[73, 24, 98, 67, 76],
        weight: 35.0,
    },
    Country {
        code: "GB",
        utc_offsets: &[0.0],
        languages: &[("en", 1.0)],
        residential_octets: &[86, 81, 92],
        weight: 8.0,
    },
    Country {
        code: "DE",
        utc_offsets: &[1.0],
        languages: &[("de", 0.7), ("en", 0.3)],
        residential_octets: &[91, 79, 93],
        weight: 7.0,
    },
    Country {
        code: "FR",
        utc_offsets: &[1.0],
        languages: &[("fr", 0.75), ("en", 0.25)],
        residential_octets: &[90, 82, 88],
        weight: 5.0,
    },
    Country {
        code: "IN",
        utc_offsets: &[5.5],
        languages: &[("en", 0.85), ("hi", 0.15)],
        residential_octets: &[49, 106, 117],
        weight: 10.0,
    },
    Country {
        code: "JP",
        utc_offsets: &[9.0],
        languages: &[("ja", 0.8), ("en", 0.2)],
        residential_octets: &[126, 153, 219],
        weight: 6.0,
    },
    Country {
        code: "BR",
        utc_offsets: &[-3.0],
        languages: &[("pt", 0.8), ("en", 0.2)],
        residential_octets: &[177, 179, 187],
        weight: 6.0,
    },
    Country {
        code: "CA",
        utc_offsets: &[-8.0, -5.0, -5.0],
        languages: &[("en", 0.8), ("fr", 0.2)],
        residential_octets: &[142, 174, 99],
        weight: 5.0,
    },
    Country {
        code: "KR",
        utc_offsets: &[9.0],
        languages: &[("ko", 0.8), ("en", 0.2)],
        residential_octets: &[121, 211, 175],
        weight: 4.0,
    },
    Country {
        code: "AU",
        utc_offsets: &[11.0, 10.0],
        languages: &[("en", 1.0)],
        residential_octets: &[101, 110, 124],
        weight: 4.0,
    },
    Country {
        code: "ES",
        utc_offsets: &[1.0],
        languages: &[("es", 0.8), ("en", 0.2)],
        residential_octets: &[83, 88, 95],
        weight: 3.0,
    },
    Country {
        code: "MX",
        utc_offsets: &[-6.0],
        languages: &[("es", 0.85), ("en", 0.15)],
        residential_octets: &[187, 189, 201],
        weight: 3.0,
    },
    Country {
        code: "SG",
        utc_offsets: &[8.0],
        languages: &[("en", 0.85), ("zh", 0.15)],
        residential_octets: &[116, 118, 175],
        weight: 4.0,
    },
];

pub fn pick_country(rng: &mut StdRng) -> &'static Country {
    let weights: Vec<f64> = COUNTRIES.iter().map(|c| c.weight).collect();
    &COUNTRIES[weighted(rng, &weights)]
}

pub fn country(code: &str) -> &'static Country {
    COUNTRIES
        .iter()
        .find(|c| c.code == code)
        .unwrap_or(&COUNTRIES[0])
}

impl Country {
    pub fn utc_offset(&self, rng: &mut StdRng) -> f64 {
        *pick(rng, self.utc_offsets)
    }

    pub fn language(&self, rng: &mut StdRng) -> &'static str {
        let weights: Vec<f64> = self.languages.iter().map(|(_, w)| *w).collect();
        self.languages[weighted(rng, &weights)].0
    }

    /// A home-broadband address: IPv4 from a national ISP range, or (for some
    /// users) an IPv6 address, as residential connections increasingly are.
    pub fn residential_ip(&self, rng: &mut StdRng) -> String {
        if rng.random_bool(0.12) {
            return format!(
                "2a02:{:x}:{:x}:{:x}::{:x}",
                int(rng, 0x100, 0xfff),
                int(rng, 0, 0xffff),
                int(rng, 0, 0xffff),
                int(rng, 1, 0xffff)
            );
        }
        let a = *pick(rng, self.residential_octets);
        format!(
            "{a}.{}.{}.{}",
            int(rng, 0, 255),
            int(rng, 0, 255),
            int(rng, 1, 254)
        )
    }
}

/// First octets of big hosting / cloud ranges (AWS, GCP, Azure, DigitalOcean,
/// Vultr, OVH): where servers, batch jobs and proxy networks call from.
const CLOUD_OCTETS: &[u8] = &[
    3, 18, 34, 35, 52, 54, 20, 40, 104, 146, 159, 167, 45, 149, 51,
];

/// A /24 in hosting space, as its first three octets.
pub fn cloud_prefix(rng: &mut StdRng) -> [u8; 3] {
    [
        *pick(rng, CLOUD_OCTETS),
        int(rng, 0, 255) as u8,
        int(rng, 0, 255) as u8,
    ]
}

/// An address inside a /24.
pub fn ip_in(rng: &mut StdRng, prefix: [u8; 3]) -> String {
    format!(
        "{}.{}.{}.{}",
        prefix[0],
        prefix[1],
        prefix[2],
        int(rng, 2, 254)
    )
}

/// Official SDKs, as an app or a developer's script would send them.
pub const SDK_AGENTS: &[&str] = &[
    "atlas-sdk-python/0.9.1",
    "atlas-sdk-python/0.8.4",
    "atlas-sdk-node/1.4.2",
    "atlas-sdk-go/0.3.0",
];

/// What people using the API from a browser-based tool or notebook send.
pub const HUMAN_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "atlas-sdk-python/0.9.1",
    "atlas-sdk-node/1.4.2",
];

/// Bare HTTP clients: scripted harvesting rarely bothers with an SDK.
pub const SCRIPT_AGENTS: &[&str] = &[
    "python-httpx/0.27.0",
    "python-httpx/0.27.0",
    "python-requests/2.32.3",
    "aiohttp/3.10.10",
];
